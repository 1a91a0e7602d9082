"""DeepHEMNMA model files: :mod:`..core.model_file`'s layout, format ``cryoflex-deephemnma``, version 1.

Metadata keys (JSON types):
- ``network``: the configuration :func:`.network.build_network` rebuilds the network from
  (``arch`` shared/separate, ``blocks``, ``width``, ``features``, ``hidden``, ``dropout``,
  ``n_modes``, ``targets``);
- ``targets``: the predicted quantities (``amplitudes``, ``quaternion``, ``shifts``);
- ``labels``: the standardisation (:meth:`.labels.LabelScaler.to_dict`);
- ``mode_numbers``, ``n_modes``: the normal modes whose amplitudes are predicted;
- ``working_size`` (px) and ``working_apix`` (A/px): what the images are Fourier-cropped to;
  ``input_box`` and ``input_apix``: the training images (prediction images must cover the same
  field of view, ``box x apix``);
- ``normalisation``: how each image is normalised (per image, zero mean, unit std);
- ``reference``: free-form description of the reference model and modes;
- ``label_source``, ``training`` (set sizes, outliers removed, epochs, time) and ``validation``
  (final validation figures); plus ``created`` and ``torch``.
"""
from ..core.model_file import ModelFileError, read_model_file, save_model_file
from .labels import LabelScaler
from .network import build_network, count_parameters

__all__ = ["FORMAT", "VERSION", "ModelFileError", "save_model", "load_model", "model_metadata"]

FORMAT = "cryoflex-deephemnma"
VERSION = 1
_REQUIRED = ("network", "labels", "mode_numbers", "working_size", "working_apix", "input_box", "input_apix")


def save_model(path, net, metadata, half=False):
    """Write ``net`` and ``metadata`` (see module docstring for the required keys) to ``path``."""
    missing = [k for k in _REQUIRED if k not in metadata and not (k == "network" and hasattr(net, "config"))]
    if missing:
        raise ValueError("DeepHEMNMA model metadata lacks %s" % ", ".join(missing))
    meta = dict(metadata)
    meta.setdefault("network", net.config)
    meta.setdefault("targets", net.config["targets"])
    meta.setdefault("n_modes", net.config["n_modes"])
    meta.setdefault("n_parameters", count_parameters(net))
    meta.setdefault("normalisation", "Fourier crop to working_size, then per image: zero mean, unit std")
    save_model_file(path, FORMAT, VERSION, net.state_dict(), meta, half=half)


def model_metadata(path):
    """The metadata of a model file (no network built)."""
    return read_model_file(path, FORMAT, VERSION, "DeepHEMNMA model")[1]


def load_model(path, device="cpu", mode_numbers=None):
    """``(network in eval mode on device, label scaler, metadata)``.

    ``mode_numbers``, when given, must be the modes the model was trained on (same order).
    """
    state, meta = read_model_file(path, FORMAT, VERSION, "DeepHEMNMA model")
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise ModelFileError("%s: DeepHEMNMA model metadata lacks %s" % (path, ", ".join(missing)))
    trained = [int(m) for m in meta["mode_numbers"]]
    if mode_numbers is not None and [int(m) for m in mode_numbers] != trained:
        raise ModelFileError("%s was trained on modes %s but modes %s were requested; use a model trained on "
                             "those modes (or request %s)" % (path, trained, list(mode_numbers), trained))
    net = build_network(meta["network"])
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelFileError("%s: weights do not match the network described in its metadata (%s)"
                             % (path, str(exc).splitlines()[0])) from None
    return net.to(device).eval(), LabelScaler.from_dict(meta["labels"]), meta
