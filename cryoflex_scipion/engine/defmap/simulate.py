"""Maps simulated from atomic models with per-atom blurring from B-factors (DEFMap training data).

Each atom is a 3D Gaussian of weight = its electrons and variance per axis

    sigma_i^2 = (0.225 * resolution)^2 + B_i / (8 pi^2)

- ``0.225 * resolution`` is the Gaussian width that Chimera's ``molmap`` gives a map of that
  resolution (sigma factor 1 / (pi sqrt 2));
- ``B / (8 pi^2) = <u_x^2>`` is the atom's mean-square displacement along one axis, so an atom
  that moves more is spread wider and its peak is lower: the signal DEFMap learns.

Gaussians are integrated over voxels (erf differences, separable) within a window of
+-4 sigma_max around each atom, and accumulated into a box of any shape.  Cost is
``atoms * window^3``, independent of the box size.
"""
import math

import numpy as np
import torch

from .grid import Grid

__all__ = ["atom_sigmas", "simulate_map", "grid_around"]

MOLMAP_SIGMA = 0.225


def atom_sigmas(bfactors, resolution):
    """Per-atom Gaussian widths (A): ``sqrt((0.225 res)^2 + max(B, 0) / (8 pi^2))``."""
    b = np.clip(np.asarray(bfactors, dtype=np.float64), 0, None)
    return np.sqrt((MOLMAP_SIGMA * resolution) ** 2 + b / (8 * np.pi ** 2))


def grid_around(coords, apix, padding=15.0):
    """A grid (any shape) covering the atoms plus ``padding`` A on every side, origin on the lower corner."""
    coords = np.asarray(coords, dtype=np.float64)
    low = coords.min(0) - padding
    high = coords.max(0) + padding
    n_xyz = np.ceil((high - low) / apix).astype(int) + 1
    return Grid((int(n_xyz[2]), int(n_xyz[1]), int(n_xyz[0])), float(apix), tuple(float(v) for v in low))


def _window_integrals(centres_idx, pos_idx, sigma_px):
    """Fraction of 1D Gaussians (..., A) falling in the voxels ``centres_idx`` (A, W) (units: voxels)."""
    scale = 1.0 / (sigma_px[:, None] * math.sqrt(2.0))
    low = torch.erf((centres_idx - 0.5 - pos_idx[:, None]) * scale)
    high = torch.erf((centres_idx + 0.5 - pos_idx[:, None]) * scale)
    return 0.5 * (high - low)


def simulate_map(coords, bfactors, grid, resolution, weights=None, device="cpu", atom_chunk=4096,
                 noise=0.0, seed=0):
    """Map ``(nz, ny, nx)`` float32 numpy of the atoms on ``grid`` (density per A^3).

    ``coords`` (A, 3) x, y, z in A in the grid's frame; ``weights`` default to electrons of
    carbon (6) when not given (pass :func:`core.atoms.electrons` of the elements).
    ``noise`` adds white Gaussian noise of that many times the standard deviation of the
    noiseless map over the voxels above its mean (0: noiseless).
    """
    coords = np.asarray(coords, dtype=np.float64)
    weights = np.full(len(coords), 6.0) if weights is None else np.asarray(weights, dtype=np.float64)
    sigma = atom_sigmas(bfactors, resolution) / grid.apix   # in voxels
    half = int(np.ceil(4 * sigma.max()))
    rel = torch.arange(-half, half + 1, device=device, dtype=torch.float64)
    shape = grid.shape
    vol = torch.zeros(int(np.prod(shape)), dtype=torch.float64, device=device)
    idx_zyx = grid.xyz_to_index(coords)
    for start in range(0, len(coords), atom_chunk):
        sl = slice(start, start + atom_chunk)
        pos = torch.as_tensor(idx_zyx[sl], device=device)
        sig = torch.as_tensor(sigma[sl], device=device)
        base = torch.floor(pos + 0.5)
        cells = base[:, :, None] + rel                     # (A, 3, W) voxel indices per axis
        g = [_window_integrals(cells[:, a], pos[:, a], sig) for a in range(3)]
        inside = [(cells[:, a] >= 0) & (cells[:, a] < shape[a]) for a in range(3)]
        g = [ga * ins for ga, ins in zip(g, inside)]       # drop what falls outside the box
        w = torch.as_tensor(weights[sl], device=device)
        values = torch.einsum("a,az,ay,ax->azyx", w, g[0], g[1], g[2])
        c = [cells[:, a].clamp(0, shape[a] - 1).long() for a in range(3)]
        flat = (c[0][:, :, None, None] * shape[1] + c[1][:, None, :, None]) * shape[2] + c[2][:, None, None, :]
        vol.index_add_(0, flat.reshape(-1), values.reshape(-1))
    vol = vol.reshape(shape) / grid.apix ** 3
    out = vol.float().cpu().numpy()
    if noise > 0:
        signal = out[out > out.mean()].std()
        out = out + np.random.default_rng(seed).normal(0, noise * signal, out.shape).astype(np.float32)
    return out
