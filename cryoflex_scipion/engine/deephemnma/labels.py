"""Training labels of DeepHEMNMA: where they come from, outlier filtering, standardisation, loss.

Targets (all per particle):
- ``amplitudes``: normal-mode amplitudes (M values, HEMNMA units);
- ``quaternion``: the orientation as a unit quaternion ``(w, x, y, z)`` of :mod:`..core.geometry`
  (canonical hemisphere ``w >= 0`` for storage; the loss does not depend on the sign);
- ``shifts``: the RELION origin ``(x, y)`` in A (:mod:`..core.geometry`'s translation convention).

Sources: a STAR file with ``cryoflexAmplitude<mode>`` columns and poses (the ``hemnma`` command's
output), an ``.npz`` with ``euler``, ``origin_A``, ``amplitudes`` and optionally ``mode_numbers``
(the ``hemnma`` command's ``results.npz``, or ground truth), or the ``ground_truth.csv`` of the
``simulate`` command.

Outliers: particles whose amplitudes are farther than a Mahalanobis distance (threshold 3.2, as
in the paper and in HEMNMA) from the mean are left out of training.

Standardisation (stored in the model file): amplitudes per mode ``(a - mean) / std``; shifts
divided by one isotropic scale ``sqrt(mean |o|^2 / 2)`` around 0 (in-plane rotation augmentation
turns the origins, so their distribution is rotation-invariant and only an isotropic scale keeps
the labels consistent); quaternions are already unit vectors.

Loss: L1 in standardised units, averaged over each target's components and summed over targets;
for the quaternion the prediction is normalised first and the L1 distance taken to the nearer of
``q`` and ``-q`` (one rotation), so nothing is discontinuous at the hemisphere's edge.
"""
import re

import numpy as np
import torch

from ..core.errors import EngineInputError
from ..core.geometry import euler_to_quaternion
from ..core.io.particles import AMPLITUDE_COLUMN
from ..core.metrics import mahalanobis
from ..core.numbers import parse_number_list

__all__ = ["LabelError", "Labels", "labels_from_table", "labels_from_npz", "labels_from_csv", "outlier_mask",
           "LabelScaler", "quaternion_l1", "target_loss", "amplitude_columns", "parse_mode_list"]

_AMPLITUDE_COLUMN = re.compile("^" + AMPLITUDE_COLUMN.replace("%d", r"(\d+)") + "$")


class LabelError(EngineInputError):
    """Labels missing or unusable, with a message for the user."""


class Labels:
    """Per-particle labels: ``amplitudes (N, M)``, ``euler (N, 3)`` degrees, ``origin_A (N, 2)``, mode numbers."""

    def __init__(self, amplitudes, euler, origin_A, mode_numbers, source=""):
        self.amplitudes = np.asarray(amplitudes, np.float64).reshape(len(euler), -1)
        self.euler = np.asarray(euler, np.float64)
        self.origin_A = np.asarray(origin_A, np.float64)
        self.mode_numbers = [int(m) for m in mode_numbers]
        self.source = source
        if self.amplitudes.shape[1] != len(self.mode_numbers):
            raise LabelError("%s: %d amplitude columns for %d mode numbers"
                             % (source, self.amplitudes.shape[1], len(self.mode_numbers)))
        for name, v in (("amplitudes", self.amplitudes), ("angles", self.euler), ("origins", self.origin_A)):
            bad = ~np.isfinite(v).reshape(len(v), -1).all(1)
            if bad.any():
                raise LabelError("%s: %d particle(s) have NaN or infinite %s (first: particle %d)"
                                 % (source, bad.sum(), name, np.nonzero(bad)[0][0] + 1))

    def __len__(self):
        return len(self.euler)

    @property
    def quaternion(self):
        return euler_to_quaternion(self.euler)

    def subset(self, index):
        return Labels(self.amplitudes[index], self.euler[index], self.origin_A[index], self.mode_numbers, self.source)

    def select_modes(self, wanted):
        """Only the modes ``wanted`` (mode numbers), in that order."""
        if wanted is None:
            return self
        missing = [m for m in wanted if m not in self.mode_numbers]
        if missing:
            raise LabelError("%s: no amplitudes for mode(s) %s (it has modes %s)"
                             % (self.source, missing, self.mode_numbers))
        cols = [self.mode_numbers.index(m) for m in wanted]
        return Labels(self.amplitudes[:, cols], self.euler, self.origin_A, wanted, self.source)


def parse_mode_list(text):
    """``'7-9'`` or ``'7,8,9'`` -> ``[7, 8, 9]``; None/empty -> None (:func:`..core.numbers.parse_number_list`)."""
    try:
        return parse_number_list(text, "mode list")
    except ValueError as exc:
        raise LabelError(str(exc)) from None


def amplitude_columns(extra):
    """``{mode number: column name}`` of the ``cryoflexAmplitude<mode>`` columns of a STAR table."""
    found = {}
    for name in extra:
        m = _AMPLITUDE_COLUMN.match(name)
        if m:
            found[int(m.group(1))] = name
    return dict(sorted(found.items()))


def labels_from_table(table, mode_numbers=None, source="particles"):
    """Labels from a :class:`..core.io.particles.ParticleTable` (poses + amplitude columns)."""
    columns = amplitude_columns(table.extra)
    if not columns:
        raise LabelError("%s has no cryoflexAmplitude<mode> columns: training needs normal-mode amplitudes "
                         "(run HEMNMA elastic alignment first, or give --labels-npz / --labels-csv)" % source)
    if not table.has_pose:
        raise LabelError("%s has no angles (rlnAngleRot/Tilt/Psi): training needs the particles' orientations"
                         % source)
    numbers = list(columns)
    try:
        amps = np.stack([np.asarray(table.extra[columns[m]], np.float64) for m in numbers], -1)
    except ValueError as exc:
        raise LabelError("%s: amplitude columns are not numeric (%s)" % (source, exc)) from None
    return Labels(amps, table.euler, table.origin_A, numbers, source).select_modes(mode_numbers)


def labels_from_npz(path, mode_numbers=None):
    """Labels from an ``.npz`` with ``euler``, ``origin_A``, ``amplitudes`` (and ``mode_numbers``)."""
    try:
        loaded = np.load(path)
        if not hasattr(loaded, "files"):  # a .npy: one array, not the named arrays of an archive
            raise LabelError("%s is a single array, not an .npz archive: save euler, origin_A and amplitudes with "
                             "numpy.savez" % path)
        with loaded as data:
            missing = [k for k in ("euler", "origin_A", "amplitudes") if k not in data]
            if missing:
                raise LabelError("%s lacks %s (needs euler, origin_A, amplitudes)" % (path, ", ".join(missing)))
            amps = data["amplitudes"]
            amps = amps.reshape(len(amps), -1)
            numbers = data["mode_numbers"].tolist() if "mode_numbers" in data else list(range(1, amps.shape[1] + 1))
            labels = Labels(amps, data["euler"], data["origin_A"], numbers, path)
    except (OSError, ValueError) as exc:
        if isinstance(exc, LabelError):
            raise
        raise LabelError("%s: not a readable labels .npz (%s)" % (path, exc)) from None
    return labels.select_modes(mode_numbers)


def labels_from_csv(path, mode_numbers=None):
    """Labels from the ``simulate`` command's ``ground_truth.csv`` (columns rot, tilt, psi, originX_A,
    originY_A, amplitude_1..M).  ``amplitude_k`` is the k-th mode of the simulation; ``mode_numbers``
    (if given, one per amplitude column) names them, e.g. ``[7, 8, 9]``."""
    try:
        data = np.genfromtxt(path, delimiter=",", names=True)
    except (OSError, ValueError) as exc:
        raise LabelError("%s: not a readable ground-truth CSV (%s)" % (path, exc)) from None
    names = data.dtype.names or ()
    need = ("rot", "tilt", "psi", "originX_A", "originY_A")
    missing = [c for c in need if c not in names]
    amp_cols = sorted((c for c in names if c.startswith("amplitude_")), key=lambda c: int(c.split("_")[1]))
    if missing or not amp_cols:
        raise LabelError("%s lacks %s" % (path, ", ".join(missing + ([] if amp_cols else ["amplitude_<k> columns"]))))
    data = np.atleast_1d(data)
    amps = np.stack([data[c] for c in amp_cols], -1)
    numbers = list(range(1, len(amp_cols) + 1))
    if mode_numbers is not None:
        if len(mode_numbers) != len(amp_cols):
            raise LabelError("%s has %d amplitude columns but %d mode numbers were given (%s)"
                             % (path, len(amp_cols), len(mode_numbers), mode_numbers))
        numbers = list(mode_numbers)
    return Labels(amps, np.stack([data["rot"], data["tilt"], data["psi"]], -1),
                  np.stack([data["originX_A"], data["originY_A"]], -1), numbers, path)


def outlier_mask(amplitudes, threshold=3.2):
    """True for particles whose amplitudes are farther than ``threshold`` (Mahalanobis) from the mean.

    Nothing is flagged when ``threshold <= 0``, without amplitudes, or with too few particles for a
    covariance (fewer than modes + 2).
    """
    amps = np.asarray(amplitudes, np.float64)
    n, m = amps.shape
    if threshold <= 0 or m == 0 or n < m + 2:
        return np.zeros(n, bool)
    return mahalanobis(amps) > threshold


class LabelScaler:
    """Standardisation of the labels (see module docstring); ``to_dict``/``from_dict`` for model files."""

    def __init__(self, amplitude_mean, amplitude_std, shift_scale):
        self.amplitude_mean = np.asarray(amplitude_mean, np.float64).reshape(-1)
        self.amplitude_std = np.asarray(amplitude_std, np.float64).reshape(-1)
        self.shift_scale = float(shift_scale)

    @classmethod
    def fit(cls, labels):
        amps = labels.amplitudes
        mean = amps.mean(0) if len(amps) else np.zeros(amps.shape[1])
        std = amps.std(0) if len(amps) else np.ones(amps.shape[1])
        std = np.where(std > 1e-12, std, 1.0)
        scale = float(np.sqrt((labels.origin_A ** 2).mean())) if len(labels) else 1.0
        return cls(mean, std, scale if scale > 1e-12 else 1.0)

    def to_dict(self):
        return {"amplitude_mean": self.amplitude_mean.tolist(), "amplitude_std": self.amplitude_std.tolist(),
                "shift_scale_A": self.shift_scale}

    @classmethod
    def from_dict(cls, d):
        return cls(d["amplitude_mean"], d["amplitude_std"], d["shift_scale_A"])

    def _t(self, values, like):
        return torch.as_tensor(values, dtype=like.dtype, device=like.device)

    def encode(self, amplitudes, quaternion, origin_A):
        """Raw labels (torch) -> standardised targets ``{target: tensor}``."""
        return {"amplitudes": (amplitudes - self._t(self.amplitude_mean, amplitudes))
                / self._t(self.amplitude_std, amplitudes),
                "quaternion": quaternion, "shifts": origin_A / self.shift_scale}

    def decode(self, outputs):
        """Network outputs (torch) -> ``amplitudes``, unit canonical ``quaternion``, ``origin_A``."""
        out = {}
        if "amplitudes" in outputs:
            a = outputs["amplitudes"]
            out["amplitudes"] = a * self._t(self.amplitude_std, a) + self._t(self.amplitude_mean, a)
        if "quaternion" in outputs:
            q = outputs["quaternion"]
            q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            out["quaternion"] = torch.where(q[:, :1] < 0, -q, q)
        if "shifts" in outputs:
            out["origin_A"] = outputs["shifts"] * self.shift_scale
        return out


def quaternion_l1(pred, target):
    """Per-particle L1 distance between the normalised prediction and the nearer of ``+-target``
    (mean over the 4 components)."""
    q = pred / pred.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    plus = (q - target).abs().mean(-1)
    minus = (q + target).abs().mean(-1)
    return torch.minimum(plus, minus)


def target_loss(outputs, targets):
    """``{target: mean L1 loss}`` in standardised units (see module docstring)."""
    losses = {}
    for name, out in outputs.items():
        out = out.float()
        if name == "quaternion":
            losses[name] = quaternion_l1(out, targets[name]).mean()
        else:
            losses[name] = (out - targets[name]).abs().mean()
    return losses
