"""Densities as particles, and particles back to densities (mass-conserving splatting).

Coordinates
-----------
CryoTRANS moves the voxels of the initial map as particles.  Their positions
are *box units*: box coordinates (:mod:`..core.geometry`: x, y, z relative to
voxel ``D // 2``) divided by the box length ``D * apix``, so the whole box
spans about [-0.5, 0.5) whatever its size or sampling.  The velocity network
works in these units at every level of the multi-scale schedule, and the
Sinkhorn cost ``|x - y|^2`` is measured in them (as in the CryoTRANS paper,
where the entropic parameter epsilon = 1e-4 refers to a unit box).

A :class:`Level` is the grid of one scale: the full grid of ``D`` voxels
binned by ``factor`` (``m = ceil(D / factor)`` coarse voxels per axis).
"""
from dataclasses import dataclass

import numpy as np
import torch

from ..core.maps import bin_map

__all__ = ["Level", "auto_threshold", "prepare_densities", "particles_from_density", "splat"]


@dataclass(frozen=True)
class Level:
    size: int       # D, voxels per axis of the full grid
    factor: int     # binning factor of this level

    @property
    def m(self):
        return -(-self.size // self.factor)

    def positions(self, index_zyx):
        """Box-unit positions (x, y, z) of coarse voxel indices ``(P, 3)`` given as (z, y, x)."""
        idx = torch.as_tensor(index_zyx).flip(-1).to(torch.float64)
        fine = idx * self.factor + (self.factor - 1) / 2.0  # centre of the block, in full-grid indices
        return (fine - self.size // 2) / self.size

    def to_index(self, positions):
        """Fractional coarse-voxel indices (x, y, z) of box-unit positions."""
        fine = positions * self.size + self.size // 2
        return (fine - (self.factor - 1) / 2.0) / self.factor


def auto_threshold(volume):
    """Default density threshold: mean + 1 standard deviation of the whole map.

    For a molecule filling a small part of its box this contour sits at the
    molecular envelope of low-pass maps and above the noise of solvent; set
    it by hand when the box is tight around the molecule.
    """
    v = np.asarray(volume, dtype=np.float64)
    return float(v.mean() + v.std())


def prepare_densities(map0, map1, threshold0, threshold1):
    """Thresholded, non-negative densities as in CryoTRANS.

    ``map0`` keeps its values above ``threshold0`` (others 0) and is scaled to
    a maximum of 1; ``map1`` likewise, then scaled to the same total mass, so
    the two are balanced for optimal transport.  Returns ``(a0, a1, scale0)``
    with ``a0 * scale0`` the thresholded ``map0`` in its own units.
    """
    m0 = np.where(map0 >= threshold0, map0, 0.0).astype(np.float64)
    m1 = np.where(map1 >= threshold1, map1, 0.0).astype(np.float64)
    if not np.any(m0 > 0):
        raise ValueError("no voxel of the initial map is above its threshold %g (map maximum %g)"
                         % (threshold0, float(np.max(map0))))
    if not np.any(m1 > 0):
        raise ValueError("no voxel of the target map is above its threshold %g (map maximum %g)"
                         % (threshold1, float(np.max(map1))))
    scale0 = float(m0.max())
    a0 = m0 / scale0
    a1 = m1 * (a0.sum() / m1.sum())
    return a0, a1, scale0


def particles_from_density(density, level, labels=None):
    """Particles of a density at one level: ``(positions (P, 3), masses (P,), index (P, 3) z,y,x, labels)``.

    ``density`` is the full-grid density; it is binned (summed) to the level.
    ``labels`` (full grid, int) assigns each voxel to a partition; a coarse
    voxel takes the label carrying most of its mass.
    """
    dens = bin_map(torch.as_tensor(density, dtype=torch.float64), level.factor)
    index = torch.nonzero(dens > 0)
    masses = dens[index[:, 0], index[:, 1], index[:, 2]]
    part = None
    if labels is not None:
        lab = torch.as_tensor(labels, dtype=torch.long)
        n_labels = int(lab.max()) + 1
        per_label = torch.stack([bin_map(torch.as_tensor(density, dtype=torch.float64) * (lab == k), level.factor)
                                 for k in range(n_labels)])
        part = per_label[:, index[:, 0], index[:, 1], index[:, 2]].argmax(0)
    return level.positions(index), masses, index, part


def splat(positions, masses, level):
    """Mass-conserving trilinear splatting of particles onto the level's grid ``(m, m, m)`` [z, y, x].

    Each particle spreads its mass over the 8 voxels around it.  Positions
    outside the grid are clamped to its border voxels, so no mass is lost
    (the total is conserved exactly, whatever the flow does).  Differentiable
    in ``positions`` and ``masses``.
    """
    m = level.m
    u = level.to_index(positions).clamp(0, m - 1)
    base = torch.floor(u).clamp(max=max(m - 2, 0))
    frac = u - base
    base = base.long()
    out = torch.zeros(m * m * m, dtype=masses.dtype, device=masses.device)
    fx, fy, fz = frac[:, 0], frac[:, 1], frac[:, 2]
    bx, by, bz = base[:, 0], base[:, 1], base[:, 2]
    idx, val = [], []
    for dz in (0, 1):
        wz = fz if dz else 1 - fz
        for dy in (0, 1):
            wy = fy if dy else 1 - fy
            for dx in (0, 1):
                wx = fx if dx else 1 - fx
                idx.append(((bz + dz) * m + (by + dy)) * m + (bx + dx))
                val.append(masses * wz * wy * wx)
    if m == 1:
        return masses.sum().reshape(1, 1, 1)
    return out.index_add(0, torch.cat(idx), torch.cat(val).to(out.dtype)).reshape(m, m, m)
