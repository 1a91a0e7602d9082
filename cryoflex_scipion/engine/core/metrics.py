"""Validation metrics: FSC and resolution, real-space correlation, RMSD, angular error."""
import numpy as np
import torch

from .fourier import fft_centered, radial_index
from .geometry import angular_distance

__all__ = ["fsc", "fsc_frequencies", "resolution_at", "model_map_fsc", "real_space_correlation", "mahalanobis",
           "image_correlation", "rmsd", "kabsch", "angular_error"]


def fsc(vol1, vol2, mask=None):
    """Fourier shell correlation per shell ``0 .. D//2`` (shell width one Fourier pixel)."""
    v1 = torch.as_tensor(vol1)
    v2 = torch.as_tensor(vol2).to(v1.dtype)
    if mask is not None:
        m = torch.as_tensor(mask, dtype=v1.dtype)
        v1, v2 = v1 * m, v2 * m
    size = v1.shape[-1]
    f1, f2 = fft_centered(v1.double(), 3), fft_centered(v2.double(), 3)
    shells = torch.round(radial_index(size, 3, v1.device)).long().reshape(-1)
    n_shells = size // 2 + 1
    keep = shells < n_shells
    idx = shells[keep]

    def shell_sum(x):
        return torch.zeros(n_shells, dtype=x.dtype, device=x.device).index_add_(0, idx, x.reshape(-1)[keep])

    cross = shell_sum((f1 * f2.conj()).real)
    p1 = shell_sum(f1.abs() ** 2)
    p2 = shell_sum(f2.abs() ** 2)
    return (cross / torch.sqrt(p1 * p2).clamp_min(1e-300)).cpu().numpy()


def fsc_frequencies(size, apix):
    """Spatial frequency (1/A) of each FSC shell."""
    return np.arange(size // 2 + 1) / (size * apix)


def resolution_at(curve, size, apix, threshold=0.143):
    """Resolution (A) where the FSC first drops below ``threshold``.

    Linear interpolation between the two shells around the crossing; if the
    curve never crosses, the Nyquist resolution ``2 * apix`` is returned.
    """
    curve = np.asarray(curve)
    freqs = fsc_frequencies(size, apix)
    below = np.nonzero(curve[1:] < threshold)[0]
    if len(below) == 0:
        return 2.0 * apix
    i = below[0] + 1
    f0, f1, c0, c1 = freqs[i - 1], freqs[i], curve[i - 1], curve[i]
    t = (c0 - threshold) / (c0 - c1) if c0 != c1 else 0.0
    f = f0 + t * (f1 - f0)
    return float(1.0 / f) if f > 0 else float("inf")


def model_map_fsc(coords, weights, volume, apix, sigma=None, mask=None):
    """FSC between a map and the map of an atomic model placed in the same box.

    ``coords`` are in the box frame of :mod:`geometry` (A, relative to the box
    centre); atoms are Gaussians of width ``sigma`` (default: one voxel).
    Returns ``(curve, model_map)``.
    """
    from .projection import gaussian_volume
    vol = torch.as_tensor(volume)
    model = gaussian_volume(torch.as_tensor(coords, dtype=torch.float64), weights,
                            apix if sigma is None else sigma, vol.shape[-1], apix)
    return fsc(model, vol, mask=mask), model


def real_space_correlation(a, b, mask=None):
    """Pearson correlation of two maps (inside ``mask`` when given)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if mask is not None:
        m = np.asarray(mask).ravel() > 0.5
        a, b = a[m], b[m]
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def image_correlation(a, b):
    """Per-image Pearson correlation of two batches ``(N, D, D)`` (torch)."""
    a = a.flatten(1)
    b = b.flatten(1).to(a.dtype)
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-30)


def kabsch(mobile, target):
    """Rotation ``R`` and translation ``t`` minimising ``|mobile @ R.T + t - target|``."""
    mobile = np.asarray(mobile, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    mc, tc = mobile.mean(0), target.mean(0)
    h = (mobile - mc).T @ (target - tc)
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(vt.T @ u.T))
    rot = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return rot, tc - mc @ rot.T


def rmsd(coords1, coords2, superpose=False):
    """Root-mean-square deviation (A); optionally after optimal superposition."""
    a = np.asarray(coords1, dtype=np.float64)
    b = np.asarray(coords2, dtype=np.float64)
    if superpose:
        rot, t = kabsch(a, b)
        a = a @ rot.T + t
    return float(np.sqrt(((a - b) ** 2).sum(-1).mean()))


def angular_error(rotations_est, rotations_true):
    """Per-particle angle (degrees) between estimated and true orientations."""
    return angular_distance(rotations_est, rotations_true)


def mahalanobis(values):
    """Mahalanobis distance of each row of ``values (N, d)`` to the sample mean (sample covariance)."""
    x = np.asarray(values, dtype=np.float64)
    centred = x - x.mean(0)
    cov = np.atleast_2d(np.cov(centred, rowvar=False))
    inv = np.linalg.pinv(cov)
    return np.sqrt(np.einsum("ni,ij,nj->n", centred, inv, centred).clip(min=0))
