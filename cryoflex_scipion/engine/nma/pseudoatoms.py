"""Pseudoatomic models of maps: the density above a threshold as N Gaussians of a given width.

1. Placement: weighted k-means (Lloyd) of the voxels above the threshold,
   each voxel weighted by its density, seeded by density-weighted sampling.
2. Weights: non-negative least squares of the map by the Gaussians, with the
   exact voxel-integrated Gaussians of :mod:`..core.projection` (their Gram
   matrix is separable: one small N x N product per axis).
3. Refinement: positions and weights are refined together by gradient descent
   on the squared error of the map (the Gaussian map is differentiable),
   then the weights are re-fitted.

The fit is reported as the correlation between the pseudoatomic map and the
input, both low-passed to the map's resolution, over the voxels of the
thresholded map dilated by the Gaussian width.
"""
import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import nnls
from scipy.spatial import cKDTree

from ..core.clustering import kmeans
from ..core.fourier import lowpass
from ..core.metrics import real_space_correlation
from ..core.projection import gaussian_volume

__all__ = ["PseudoatomModel", "fit_pseudoatoms", "default_count"]


@dataclass
class PseudoatomModel:
    coords: np.ndarray   # (N, 3) A, in the map's frame (origin + index * apix)
    weights: np.ndarray  # (N,) integrated density of each Gaussian
    sigma: float         # A
    correlation: float   # masked, at the map's resolution
    correlation_box: float
    resolution: float    # A, used for the correlation
    model_map: np.ndarray


def default_count(n_voxels, apix, sigma):
    """About one Gaussian per (2 sigma)^3 of thresholded volume."""
    return max(int(round(n_voxels * apix ** 3 / (2.0 * sigma) ** 3)), 1)


def _axis_basis(size, apix, pos, sigma):
    """Voxel integrals of 1D Gaussians along one axis: (N, size)."""
    edges = (np.arange(size + 1) - size // 2 - 0.5) * apix
    cdf = torch.erf((torch.as_tensor(edges) - torch.as_tensor(pos)[:, None]) / (sigma * math.sqrt(2.0)))
    return (0.5 * (cdf[:, 1:] - cdf[:, :-1])).numpy()


def _fit_weights(centred, volume, apix, sigma):
    """Non-negative least squares of the map by unit-weight Gaussians at ``centred`` (box frame)."""
    size = volume.shape[0]
    gx, gy, gz = (_axis_basis(size, apix, centred[:, k], sigma) / apix for k in range(3))
    gram = (gx @ gx.T) * (gy @ gy.T) * (gz @ gz.T)
    rhs = np.einsum("az,ay,ax,zyx->a", gz, gy, gx, volume, optimize=True)
    # NNLS on the Cholesky factor of the Gram matrix: min |L^T w - L^-1 rhs|.
    chol = np.linalg.cholesky(gram + 1e-10 * np.trace(gram) / len(gram) * np.eye(len(gram)))
    target = np.linalg.solve(chol, rhs)
    weights, _ = nnls(chol.T, target, maxiter=50 * len(gram))
    return weights


def _refine(centred, weights, volume, apix, sigma, steps, device):
    target = torch.as_tensor(volume, dtype=torch.float32, device=device)
    pos = torch.tensor(centred, dtype=torch.float32, device=device, requires_grad=True)
    raw = torch.tensor(np.log(np.expm1(np.maximum(weights, 1e-6))), dtype=torch.float32, device=device,
                       requires_grad=True)
    opt = torch.optim.Adam([{"params": [pos], "lr": 0.05 * sigma}, {"params": [raw], "lr": 0.02}])
    size = volume.shape[0]
    for _ in range(steps):
        opt.zero_grad()
        model = gaussian_volume(pos, torch.nn.functional.softplus(raw), sigma, size, apix)
        loss = ((model - target) ** 2).sum()
        loss.backward()
        opt.step()
    return pos.detach().cpu().numpy().astype(np.float64)


def fit_pseudoatoms(volume, apix, origin, threshold, n_atoms=None, sigma=None, resolution=None,
                    refine_steps=150, seed=0, device="cpu"):
    """Fit a pseudoatomic model to a cubic map (see module docstring).

    ``origin`` is the map origin (A, x y z, position of voxel 0), so the
    pseudoatoms come out in the map's frame and overlay its atomic model.
    ``sigma`` defaults to 0.75 voxel, ``n_atoms`` to :func:`default_count`,
    ``resolution`` (for the reported correlation) to Nyquist.
    """
    volume = np.asarray(volume, dtype=np.float64)
    if volume.ndim != 3 or len(set(volume.shape)) != 1:
        raise ValueError("the map must be cubic (it is %s)" % "x".join(map(str, volume.shape[::-1])))
    if not np.all(np.isfinite(volume)):
        raise ValueError("the map contains NaN or infinite values")
    size = volume.shape[0]
    sigma = float(sigma or 0.75 * apix)
    mask = volume > threshold
    if not mask.any():
        raise ValueError("no voxel is above the threshold %g (map range %g to %g)"
                         % (threshold, volume.min(), volume.max()))
    n_atoms = int(n_atoms or default_count(int(mask.sum()), apix, sigma))
    if n_atoms > mask.sum():
        raise ValueError("%d pseudoatoms asked for but only %d voxels are above the threshold"
                         % (n_atoms, mask.sum()))
    # Work in the box frame of the engine (A relative to voxel size // 2).
    zz, yy, xx = np.nonzero(mask)
    points = (np.stack([xx, yy, zz], -1) - size // 2) * apix
    density = volume[mask] - threshold
    centred, _ = kmeans(points, n_atoms, weights=density, seed=seed, iterations=30)
    fit_target = np.where(volume > 0, volume, 0.0)
    weights = _fit_weights(centred, fit_target, apix, sigma)
    if refine_steps > 0:
        centred = _refine(centred, weights, fit_target, apix, sigma, refine_steps, device)
        centred = _merge_close(centred, _fit_weights(centred, fit_target, apix, sigma), 0.5 * sigma)
        weights = _fit_weights(centred, fit_target, apix, sigma)
    keep = weights > 1e-8 * weights.max()
    centred, weights = centred[keep], weights[keep]
    model_map = gaussian_volume(torch.as_tensor(centred), torch.as_tensor(weights), sigma, size, apix).numpy()

    resolution = float(resolution or 2 * apix)
    a = lowpass(torch.as_tensor(model_map), resolution, apix, ndim=3).numpy()
    b = lowpass(torch.as_tensor(volume), resolution, apix, ndim=3).numpy()
    region = _dilate(mask, max(1, int(round(sigma / apix))))
    shift = np.asarray(origin, dtype=np.float64) + (size // 2) * apix
    return PseudoatomModel(coords=centred + shift, weights=weights, sigma=sigma,
                           correlation=real_space_correlation(a, b, region),
                           correlation_box=real_space_correlation(a, b), resolution=resolution,
                           model_map=model_map)


def _merge_close(centres, weights, distance):
    """Merge pseudoatoms closer than ``distance`` (weighted mean position): refinement can
    stack two Gaussians on one spot, which adds nothing to the map and a stiff spring to NMA."""
    pairs = cKDTree(centres).query_pairs(distance, output_type="ndarray")
    if len(pairs) == 0:
        return centres
    parent = np.arange(len(centres))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        ri, rj = root(i), root(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    labels = np.array([root(i) for i in range(len(centres))])
    _, labels = np.unique(labels, return_inverse=True)
    w = np.maximum(weights, 1e-12)
    total = np.bincount(labels, weights=w)
    return np.stack([np.bincount(labels, weights=w * centres[:, k]) for k in range(3)], -1) / total[:, None]


def _dilate(mask, radius):
    out = mask.copy()
    for axis in range(3):
        for step in range(1, radius + 1):
            out |= np.roll(mask, step, axis) | np.roll(mask, -step, axis)
    return out
