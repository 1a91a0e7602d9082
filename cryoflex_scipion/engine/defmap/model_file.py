"""DEFMap model files: one ``.pt`` with the network's weights and JSON metadata.

The file layout is :mod:`..core.model_file`'s, with format ``cryoflex-defmap``, version 1.

Metadata keys (all JSON types): ``resolution`` (A; the low-pass of the training maps, which
prediction must use), ``voxel_size`` (1.5), ``box`` (10), ``lowpass``, ``normalisation``
(input: box z-score, negatives to 0), ``label_mean`` / ``label_std`` (the network predicts
standardised log10 RMSF; predictions are ``label_mean + label_std * output``),
``label_source``, ``label_rule``, ``threshold_rule``, ``training_set`` (names),
``validation`` (figures), ``n_parameters``, ``created``, ``torch``.
"""
import os

from ..core.model_file import ModelFileError, read_model_file, save_model_file
from .network import DefmapNet, count_parameters

__all__ = ["FORMAT", "DEFAULT_MODEL", "ModelFileError", "save_model", "load_model", "model_metadata"]

FORMAT = "cryoflex-defmap"
VERSION = 1
# The model shipped in the package (5 A; its card: defmap_5A_MODEL_CARD.md beside it).
DEFAULT_MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                             "data", "defmap_5A.pt")


def save_model(path, net, metadata, half=False):
    """Write ``net`` and ``metadata`` (JSON-able dict; ``resolution`` required) to ``path``;
    ``half``: weights stored as float16 (the shipped model; read back as float32)."""
    if "resolution" not in metadata:
        raise ValueError("model metadata needs the training 'resolution'")
    meta = dict(metadata)
    meta.setdefault("box", net.box)
    meta.setdefault("n_parameters", count_parameters(net))
    save_model_file(path, FORMAT, VERSION, net.state_dict(), meta, half=half)


def model_metadata(path):
    """The metadata of a model file (no network built)."""
    return read_model_file(path, FORMAT, VERSION, "DEFMap model")[1]


def load_model(path, resolution=None, device="cpu"):
    """``(DefmapNet in eval mode on device, metadata)``.

    ``resolution`` (A), when given, must equal the model's training resolution: a model
    trained on maps low-passed to 5 A gives meaningless values on 7 A maps.
    """
    state, meta = read_model_file(path, FORMAT, VERSION, "DEFMap model")
    if resolution is not None and abs(float(resolution) - float(meta["resolution"])) > 1e-6:
        raise ModelFileError("%s was trained at %g A but %g A was requested; use a model trained at %g A "
                             "or request %g A" % (path, meta["resolution"], resolution, resolution,
                                                  meta["resolution"]))
    net = DefmapNet(box=int(meta.get("box", 10)))
    net.load_state_dict(state)
    return net.to(device).eval(), meta
