"""Fingerprints: digests of everything a result depends on, so that a rerun resumes only the same job.

:func:`digest` hashes a value built of dicts, lists, numbers, strings, None, numpy arrays, tensors
and dataclasses canonically; :class:`Fingerprint` keeps one digest per named part, flattened to
dotted keys, so that a mismatch can name what differs.  Training checkpoints
(:mod:`.training.checkpoint`) and HEMNMA's finished batches (:mod:`..hemnma.pipeline`) use them.
"""
import dataclasses
import hashlib
import math

import numpy as np
import torch

__all__ = ["digest", "Fingerprint"]


def _feed(h, value):
    """Canonical bytes of ``value`` into hash ``h`` (type-tagged, so that 1 and '1' differ; integral
    floats are integers, so that 100 and 100.0 do not)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, np.ndarray):
        a = np.ascontiguousarray(value)
        h.update(b"A%s%s" % (a.dtype.str.encode(), str(a.shape).encode()))
        h.update(a.tobytes())
    elif isinstance(value, dict):
        h.update(b"D%d" % len(value))
        for k in sorted(value, key=str):
            _feed(h, str(k))
            _feed(h, value[k])
    elif isinstance(value, (list, tuple)):
        h.update(b"L%d" % len(value))
        for v in value:
            _feed(h, v)
    elif value is None:
        h.update(b"N")
    elif isinstance(value, (bool, np.bool_)):
        h.update(b"B1" if value else b"B0")
    elif isinstance(value, (int, np.integer)):
        h.update(b"I%d" % int(value))
    elif isinstance(value, (float, np.floating)):
        v = float(value)
        h.update(b"I%d" % int(v) if math.isfinite(v) and v == int(v) else b"F" + v.hex().encode())
    elif isinstance(value, str):
        data = value.encode()
        h.update(b"S%d:" % len(data) + data)
    else:
        raise TypeError("cannot fingerprint a %s" % type(value).__name__)


def digest(value):
    """Hex SHA-256 of a value made of dicts, lists, numbers, strings, None, arrays, tensors, dataclasses."""
    h = hashlib.sha256()
    _feed(h, value)
    return h.hexdigest()


def _flatten(value, prefix, out):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten(v, "%s.%s" % (prefix, k), out)
    else:
        out[prefix] = digest(value)


class Fingerprint:
    """Digests of the named parts of a run (``Fingerprint(inputs=..., network=..., training=...)``),
    flattened to dotted keys (``training.lr``), so that a mismatch names what differs."""

    def __init__(self, **parts):
        self.digests = {}
        for name, value in parts.items():
            _flatten(value, name, self.digests)

    def differences(self, other):
        """Keys whose digests differ from ``other`` (a :class:`Fingerprint` or its ``digests``)."""
        other = other.digests if isinstance(other, Fingerprint) else dict(other or {})
        return sorted(k for k in set(self.digests) | set(other) if self.digests.get(k) != other.get(k))

    def __eq__(self, other):
        return isinstance(other, Fingerprint) and self.digests == other.digests

    def __repr__(self):
        return "Fingerprint(%s)" % ", ".join(sorted(self.digests))
