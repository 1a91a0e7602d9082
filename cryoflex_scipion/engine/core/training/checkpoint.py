"""Checkpoints of a training run: atomic writes, and a fingerprint that decides whether to resume.

A checkpoint is a ``torch.save`` dictionary of whatever the trainer needs to continue (modules,
optimisers, per-particle latents, history, the epoch plan, RNG states); modules and optimisers are
stored as their state dictionaries, tensors on the CPU, so a run resumes on any device.  It is
written to ``path.tmp`` and moved onto ``path`` with ``os.replace``: an interruption at any moment
leaves the previous checkpoint or the new one, never half a file.

The fingerprint (:class:`..fingerprint.Fingerprint`) is a digest, part by part, of everything the results depend
on: the inputs (images, poses, CTFs, labels, set splits, see :meth:`.cache.ParticleCache.fingerprint`)
and every result-affecting setting (the network's configuration, the training configuration minus
pure speed or I/O knobs, the number of processes when results depend on it).  A checkpoint resumes
only when its fingerprint is the run's; otherwise (:func:`load_checkpoint`) either

- ``on_mismatch='restart'``: a line says what differs, the old file is moved aside as
  ``path.stale`` (one generation kept, for a look or to go back to) and the run starts from scratch;
- ``on_mismatch='error'``: :class:`CheckpointMismatch` (a ``ValueError``) says what differs.

A checkpoint without a fingerprint (written by an older version) or that cannot be read counts as
differing.
"""
import os

import numpy as np
import torch

from ..errors import EngineInputError
from ..runtime import log

__all__ = ["CheckpointMismatch", "save_checkpoint", "load_checkpoint", "module_state",
           "rng_state", "restore_rng_state"]

# What a differing fingerprint part means, in the message (other parts: "other <name>").
_PART_PHRASES = {"inputs": "other inputs", "network": "another network", "training": "other training settings"}


class CheckpointMismatch(EngineInputError):
    """A checkpoint written for other inputs or settings (the message says which)."""


def _cpu(value):
    """Modules and optimisers as state dictionaries, tensors on the CPU (dicts and lists walked)."""
    if isinstance(value, torch.nn.Module):
        return module_state(value)
    if isinstance(value, torch.optim.Optimizer):
        return value.state_dict()
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and any(isinstance(v, (torch.Tensor, torch.nn.Module)) for v in value):
        return [_cpu(v) for v in value]  # a list: what the weights-only loader reads back
    return value


def module_state(module):
    """A module's state dictionary, detached copies on the CPU."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def save_checkpoint(path, contents, fingerprint):
    """Write ``contents`` (a dict; modules, optimisers and tensors converted by state dictionaries /
    to the CPU, optimiser states as they are) with ``fingerprint`` to ``path``, atomically."""
    data = {k: _cpu(v) for k, v in contents.items()}
    data["fingerprint"] = fingerprint.digests
    tmp = path + ".tmp"
    try:
        torch.save(data, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(path, fingerprint, device="cpu", on_mismatch="restart", lead=True):
    """The contents of the checkpoint at ``path`` when its fingerprint is ``fingerprint``; else None
    (no file, or it was written for other inputs or settings: see the module docstring).

    ``lead``: this process logs and moves a stale checkpoint aside (the others of a distributed
    run only read).  Tensors are mapped to ``device``.
    """
    if not path or not os.path.exists(path):
        return None
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
        if "fingerprint" not in saved:
            reason = "written without a fingerprint (an older version)"
        else:
            differs = fingerprint.differences(saved["fingerprint"])
            reason = "written for %s (differs in: %s)" % (_phrase(differs), ", ".join(differs)) if differs else None
    except FileNotFoundError:  # moved aside by the lead process in the meantime
        return None
    except Exception as exc:  # truncated or foreign file
        saved, reason = None, "unreadable (%s)" % str(exc).splitlines()[0]
    if reason is None:
        return saved
    if on_mismatch == "error":
        raise CheckpointMismatch("checkpoint %s was %s; remove it or train with the same inputs and settings"
                                 % (path, reason))
    if lead:
        log("checkpoint %s was %s; starting from scratch (the old one is kept as %s.stale)" % (path, reason, path))
        os.replace(path, path + ".stale")
    return None


def _phrase(keys):
    parts = []
    for key in keys:
        part = key.split(".")[0]
        phrase = _PART_PHRASES.get(part, "other " + part)
        if phrase not in parts:
            parts.append(phrase)
    return " and ".join(parts)


def rng_state(device=None):
    """The global random states (torch CPU, the CUDA device's when given, numpy's legacy generator),
    to store in a checkpoint when a trainer draws from them rather than from seeded generators."""
    state = {"torch": torch.get_rng_state(), "numpy": list(np.random.get_state())}
    state["numpy"][1] = torch.as_tensor(state["numpy"][1].astype(np.int64))
    if device is not None and torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state, device=None):
    torch.set_rng_state(state["torch"].cpu())
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and device is not None and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)
