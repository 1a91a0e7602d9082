"""Validation metrics: FSC and resolution, real-space correlation, RMSD, angular error, and the
heterogeneity metrics of CryoBench (per-image FSC and its area, AU-FSC) with Spearman's rank
correlation.

CryoBench's FSC (``metrics/fsc/utils/volumes.py: get_fsc_curve`` in ml-struct-bio/CryoBench,
replicated by :func:`fsc_curves`, our own code): the centred 3D spectrum of an even box ``D`` has
the origin at index ``D // 2``; the voxel at distance ``r`` (Fourier pixels) belongs to shell
``i = floor(r) + 1`` (their ``dists < i and not dists < i - 1``); the curve has ``D // 2`` values:
``curve[0] = 1`` by definition and ``curve[i]``, ``i = 1 .. D/2 - 1``, is
``Re sum(conj(F1) F2) / sqrt(sum |F1|^2 sum |F2|^2)`` over shell ``i`` (``1`` when that denominator
is exactly 0), at the frequency ``pixres[i] = i / D`` cycles/px (so shell 1 is the origin alone,
and the last value sits at ``1/2 - 1/D``, not at Nyquist).  A mask, when given, multiplies both
volumes before the transform (CryoBench's ``--mask``; none by default).  AU-FSC is the trapezoid
area under ``|curve|`` against ``pixres`` (``sklearn.metrics.auc``): at most
``(D/2 - 1) / D`` (0.4921875 at 128 px), about 0 for unrelated volumes.  The FSC-0.5 / 0.143
resolutions are theirs too (``get_fsc_cutoff``): ``1 / pixres`` at the first shell whose value is
below the threshold, no interpolation, 2 px when none is.
"""
import math

import numpy as np
import torch

from .fourier import fft_centered, radial_index
from .geometry import angular_distance

__all__ = ["fsc", "fsc_frequencies", "resolution_at", "model_map_fsc", "real_space_correlation", "mahalanobis",
           "image_correlation", "rmsd", "kabsch", "angular_error", "cryobench_shells", "fsc_curves",
           "fsc_pixres", "au_fsc", "cryobench_resolution", "per_image_au_fsc", "random_au_fsc",
           "average_ranks", "spearman"]


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


# ---------------------------------------------------------------------------------------------
# CryoBench per-image FSC and AU-FSC (see the module docstring)

def cryobench_shells(size, device=None):
    """Shell index of every element of the centred ``size``^3 spectrum, CryoBench's rule
    ``floor(r) + 1`` (exact, from integer squared distances); ``(size, size, size)`` int64."""
    if size % 2:
        raise ValueError("CryoBench's FSC is defined for even boxes only (got %d)" % size)
    k = torch.arange(size, device=device, dtype=torch.int64) - size // 2
    r2 = k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2
    s = torch.floor(torch.sqrt(r2.double())).long()
    s = s + ((s + 1) ** 2 <= r2).long() - (s * s > r2).long()  # floor(sqrt) exactly
    return s + 1


def fsc_pixres(size):
    """Frequencies (cycles/px) of the CryoBench FSC values: ``arange(size // 2) / size``."""
    return np.arange(size // 2) / float(size)


def _as_double(v, device):
    if torch.is_tensor(v):
        return v.to(device=device, dtype=torch.float64)
    return torch.as_tensor(np.asarray(v, dtype=np.float64), device=device)


def fsc_curves(vols_a, vols_b, mask=None, batch=4, device=None):
    """CryoBench FSC curves between paired volumes.

    ``vols_a``, ``vols_b``: ``(D, D, D)`` or ``(N, D, D, D)`` (numpy or torch; or sequences of
    volumes, transformed ``batch`` at a time); ``mask``: optional ``(D, D, D)`` multiplying both.
    Returns ``(N, D // 2)`` float64 (``(D // 2,)`` for a single pair); ``curve[0] = 1``.
    """
    single = np.ndim(vols_a) == 3
    if single:
        vols_a, vols_b = [vols_a], [vols_b]
    if len(vols_a) != len(vols_b):
        raise ValueError("fsc_curves: %d volumes against %d" % (len(vols_a), len(vols_b)))
    first = vols_a[0]
    device = device or (first.device if torch.is_tensor(first) else "cpu")
    size = first.shape[-1]
    if tuple(first.shape) != (size,) * 3:
        raise ValueError("fsc_curves needs cubic volumes, got %s" % (tuple(first.shape),))
    shells = cryobench_shells(size, device).reshape(-1)
    n_shells = size // 2
    keep = shells < n_shells
    idx = shells[keep]
    m = None if mask is None else torch.as_tensor(mask, device=device, dtype=torch.float64)
    out = np.empty((len(vols_a), n_shells))
    for start in range(0, len(vols_a), batch):
        stop = min(start + batch, len(vols_a))
        a = torch.stack([_as_double(v, device) for v in vols_a[start:stop]])
        b = torch.stack([_as_double(v, device) for v in vols_b[start:stop]])
        if a.shape != b.shape:
            raise ValueError("fsc_curves: volumes of shapes %s and %s" % (tuple(a.shape[1:]), tuple(b.shape[1:])))
        if m is not None:
            a, b = a * m, b * m
        fa, fb = fft_centered(a, 3).flatten(1)[:, keep], fft_centered(b, 3).flatten(1)[:, keep]

        def shell_sum(x):
            return torch.zeros(len(x), n_shells, dtype=x.dtype, device=x.device).index_add_(1, idx, x)

        cross = shell_sum((fa.conj() * fb).real)
        pa, pb = shell_sum(fa.real ** 2 + fa.imag ** 2), shell_sum(fb.real ** 2 + fb.imag ** 2)
        den = torch.sqrt(pa * pb)
        curve = torch.where(den > 0, cross / torch.where(den > 0, den, torch.ones_like(den)),
                            torch.ones_like(den))
        curve[:, 0] = 1.0
        out[start:stop] = curve.cpu().numpy()
    return out[0] if single else out


def au_fsc(curve, pixres=None):
    """Area under ``|curve|`` (trapezoid) against ``pixres`` (default :func:`fsc_pixres` of the box
    ``2 * len(curve)``): CryoBench's AU-FSC.  ``curve`` ``(S,)`` or ``(N, S)``."""
    curve = np.abs(np.asarray(curve, dtype=np.float64))
    if pixres is None:
        pixres = fsc_pixres(2 * curve.shape[-1])
    pixres = np.asarray(pixres, dtype=np.float64)
    return np.sum(0.5 * (curve[..., 1:] + curve[..., :-1]) * np.diff(pixres), axis=-1)


def cryobench_resolution(curve, threshold, apix=1.0):
    """CryoBench's FSC cut-off: ``apix / pixres`` at the first shell with FSC < ``threshold``
    (no interpolation), ``2 * apix`` when the curve never drops below; per curve of ``(N, S)``."""
    single = np.ndim(curve) == 1
    curve = np.atleast_2d(np.asarray(curve, dtype=np.float64))
    pixres = fsc_pixres(2 * curve.shape[-1])
    out = np.full(len(curve), 2.0)
    for n, c in enumerate(curve):
        below = np.nonzero(c < threshold)[0]
        if len(below):
            out[n] = 1.0 / pixres[below[0]] if pixres[below[0]] > 0 else np.inf
    out = out * apix
    return float(out[0]) if single else out


def per_image_au_fsc(curves, apix=None, labels=None):
    """Summary of per-image FSC curves ``(N, D//2)`` (from :func:`fsc_curves`) as CryoBench reports
    it: AU-FSC mean, sd (population, ``np.std``), median, n; mean and median FSC-0.5 and FSC-0.143
    resolutions in px (and in A with ``apix``); with ``labels`` (per image, e.g. the frame) the
    AU-FSC mean, sd and n per label.  The per-image values are under ``values``."""
    curves = np.atleast_2d(np.asarray(curves, dtype=np.float64))
    values = au_fsc(curves)
    out = {"n": int(len(values)), "au_fsc_mean": float(values.mean()), "au_fsc_sd": float(values.std()),
           "au_fsc_median": float(np.median(values)), "au_fsc_max_possible": float(au_fsc(np.ones(curves.shape[-1]))),
           "values": values.tolist()}
    for name, t in (("fsc05", 0.5), ("fsc0143", 0.143)):
        px = cryobench_resolution(curves, t, 1.0)
        out["%s_px_mean" % name], out["%s_px_median" % name] = float(px.mean()), float(np.median(px))
        if apix:
            out["%s_A_mean" % name], out["%s_A_median" % name] = float(px.mean() * apix), float(np.median(px) * apix)
    if labels is not None:
        labels = np.asarray(labels)
        out["per_label"] = {str(k): {"au_fsc_mean": float(values[labels == k].mean()),
                                     "au_fsc_sd": float(values[labels == k].std()),
                                     "n": int((labels == k).sum())} for k in np.unique(labels)}
    return out


def random_au_fsc(size):
    """Expected AU-FSC (and its standard deviation) of two independent white-noise volumes.

    In a shell of ``n`` Fourier elements (``n`` real degrees of freedom, Hermitian pairs counted
    twice) the FSC is the cosine between independent isotropic Gaussian vectors of ``R^n``:
    ``E|FSC| = Gamma(n/2) / (sqrt(pi) Gamma((n+1)/2))``, ``E FSC^2 = 1/n``.  ``curve[0] = 1`` and the
    origin shell ``|FSC| = 1`` are fixed.  Returns ``(mean, sd)``.
    """
    counts = np.bincount(cryobench_shells(size).reshape(-1).numpy(), minlength=size // 2)[: size // 2]
    e_abs, var = np.ones(size // 2), np.zeros(size // 2)
    for i in range(2, size // 2):
        n = counts[i]
        e_abs[i] = math.exp(math.lgamma(n / 2.0) - math.lgamma((n + 1) / 2.0)) / math.sqrt(math.pi)
        var[i] = 1.0 / n - e_abs[i] ** 2
    w = np.zeros(size // 2)  # trapezoid weight of every point
    dx = 1.0 / size
    w[:-1] += 0.5 * dx
    w[1:] += 0.5 * dx
    return float((w * e_abs).sum()), float(np.sqrt((w * w * var).sum()))


# ---------------------------------------------------------------------------------------------
# Rank correlation

def average_ranks(values):
    """Ranks 1..N of ``values``, ties given the average of the ranks they span."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if np.isnan(x).any():
        raise ValueError("ranks of values with NaN")
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.r_[0, np.nonzero(np.diff(xs))[0] + 1]
    ends = np.r_[starts[1:], len(x)]
    ranks = np.empty(len(x))
    ranks[order] = np.repeat((starts + ends - 1) / 2.0 + 1.0, ends - starts)
    return ranks


def spearman(a, b):
    """Spearman's rank correlation: Pearson's correlation of the average ranks (NaN when one side is
    constant)."""
    ra, rb = average_ranks(a), average_ranks(b)
    if len(ra) != len(rb):
        raise ValueError("spearman: %d values against %d" % (len(ra), len(rb)))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / den) if den > 0 else float("nan")
