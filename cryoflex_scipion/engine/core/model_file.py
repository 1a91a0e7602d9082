"""Trained-network files of the engine: one ``.pt`` holding weights and JSON metadata.

Layout (a dict saved with ``torch.save``, loadable with ``weights_only=True``, so opening a
file never runs code from it)::

    {"format": "<method name, e.g. cryoflex-defmap>", "version": <int>,
     "state_dict": {name: tensor},
     "weights_dtype": "float32" | "float16",   # storage only: loading gives float32
     "metadata_json": "{...}"}                  # json.dumps of the method's metadata

Weights may be stored in float16 to halve the file (a shipped model in the package); they are
cast back to float32 when read.  Each method documents its own metadata keys.
"""
import json
import os
import time

import torch

from .errors import EngineInputError

__all__ = ["ModelFileError", "save_model_file", "read_model_file"]


class ModelFileError(EngineInputError):
    """A model file that cannot be read or used for the requested task."""


def save_model_file(path, fmt, version, state_dict, metadata, half=False):
    """Write ``state_dict`` and ``metadata`` (a JSON-able dict) atomically to ``path``.

    ``half``: store floating-point weights as float16 (about half the size; read back as float32).
    """
    meta = dict(metadata)
    meta.setdefault("created", time.strftime("%Y-%m-%d %H:%M:%S"))
    meta.setdefault("torch", torch.__version__)
    state = {}
    for k, v in state_dict.items():
        v = v.detach().cpu()
        state[k] = v.half() if half and v.is_floating_point() else v
    tmp = str(path) + ".tmp"
    torch.save({"format": fmt, "version": int(version), "state_dict": state,
                "weights_dtype": "float16" if half else "float32", "metadata_json": json.dumps(meta)}, tmp)
    os.replace(tmp, path)


def read_model_file(path, fmt, max_version, description="model"):
    """``(state_dict with float32 weights, metadata)`` of a file written by :func:`save_model_file`.

    Raises :class:`ModelFileError` with a readable message when the file is missing, unreadable,
    of another format (``fmt``) or of a newer version than ``max_version``.
    """
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelFileError("%s file not found: %s" % (description, path)) from None
    except Exception as exc:
        raise ModelFileError("%s: not a readable %s file (%s)" % (path, description, exc)) from exc
    if not isinstance(blob, dict) or blob.get("format") != fmt:
        raise ModelFileError("%s: not a CryoFlex %s (format %r, expected %r)"
                             % (path, description, blob.get("format") if isinstance(blob, dict)
                                else type(blob).__name__, fmt))
    if blob.get("version", 0) > max_version:
        raise ModelFileError("%s: %s file version %s is newer than this engine reads (%d)"
                             % (path, description, blob.get("version"), max_version))
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in blob["state_dict"].items()}
    return state, json.loads(blob["metadata_json"])
