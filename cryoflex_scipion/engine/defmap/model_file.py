"""DEFMap model files: one ``.pt`` with the network's weights and JSON metadata.

Layout (a dict saved with ``torch.save``, loadable with ``weights_only=True``)::

    {"format": "cryoflex-defmap", "version": 1,
     "state_dict": {name: tensor},          # DefmapNet
     "metadata_json": "{...}"}              # json.dumps of the metadata below

Metadata keys (all JSON types): ``resolution`` (A; the low-pass of the training maps, which
prediction must use), ``voxel_size`` (1.5), ``box`` (10), ``lowpass``, ``normalisation``
(input: box z-score, negatives to 0), ``label_mean`` / ``label_std`` (the network predicts
standardised log10 RMSF; predictions are ``label_mean + label_std * output``),
``label_source``, ``label_rule``, ``threshold_rule``, ``training_set`` (names),
``validation`` (figures), ``n_parameters``, ``created``, ``torch``.
"""
import json
import os
import time

import torch

from .network import DefmapNet, count_parameters

__all__ = ["FORMAT", "ModelFileError", "save_model", "load_model", "model_metadata"]

FORMAT = "cryoflex-defmap"
VERSION = 1


class ModelFileError(ValueError):
    """A model file that cannot be used for the requested prediction."""


def save_model(path, net, metadata):
    """Write ``net`` and ``metadata`` (JSON-able dict; ``resolution`` required) to ``path``."""
    if "resolution" not in metadata:
        raise ValueError("model metadata needs the training 'resolution'")
    meta = dict(metadata)
    meta.setdefault("box", net.box)
    meta.setdefault("n_parameters", count_parameters(net))
    meta.setdefault("created", time.strftime("%Y-%m-%d %H:%M:%S"))
    meta.setdefault("torch", torch.__version__)
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    tmp = str(path) + ".tmp"
    torch.save({"format": FORMAT, "version": VERSION, "state_dict": state, "metadata_json": json.dumps(meta)}, tmp)
    os.replace(tmp, path)


def model_metadata(path):
    """The metadata of a model file (no network built)."""
    return _read(path)[1]


def _read(path):
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelFileError("model file not found: %s" % path) from None
    except Exception as exc:
        raise ModelFileError("%s: not a readable DEFMap model file (%s)" % (path, exc)) from exc
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ModelFileError("%s: not a CryoFlex DEFMap model (format %r)"
                             % (path, blob.get("format") if isinstance(blob, dict) else type(blob).__name__))
    if blob.get("version", 0) > VERSION:
        raise ModelFileError("%s: model file version %s is newer than this engine reads (%d)"
                             % (path, blob.get("version"), VERSION))
    return blob, json.loads(blob["metadata_json"])


def load_model(path, resolution=None, device="cpu"):
    """``(DefmapNet in eval mode on device, metadata)``.

    ``resolution`` (A), when given, must equal the model's training resolution: a model
    trained on maps low-passed to 5 A gives meaningless values on 7 A maps.
    """
    blob, meta = _read(path)
    if resolution is not None and abs(float(resolution) - float(meta["resolution"])) > 1e-6:
        raise ModelFileError("%s was trained at %g A but %g A was requested; use a model trained at %g A "
                             "or request %g A" % (path, meta["resolution"], resolution, resolution,
                                                  meta["resolution"]))
    net = DefmapNet(box=int(meta.get("box", 10)))
    net.load_state_dict(blob["state_dict"])
    return net.to(device).eval(), meta
