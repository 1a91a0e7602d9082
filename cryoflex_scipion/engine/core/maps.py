"""Maps as arrays on a grid: maps of atomic models, grids and resampling between them, binning.

A map is an array ``V[z, y, x]`` with a voxel size ``apix`` and an ``origin``
(x, y, z in A: the physical position of voxel (0, 0, 0), the MRC header
field).  Box coordinates (:mod:`geometry`) are relative to voxel ``D // 2``,
so a model given in the map's frame is moved into box coordinates by
subtracting :func:`box_centre`.
"""
from dataclasses import dataclass

import numpy as np
import torch

from .fourier import lowpass
from .projection import gaussian_volume

__all__ = ["Grid", "box_centre", "centred_origin", "model_map", "resample_linear", "resample_map", "bin_map"]


@dataclass(frozen=True)
class Grid:
    """A grid of any shape (non-cubic allowed): voxel index <-> physical position."""
    shape: tuple     # (nz, ny, nx)
    apix: float      # A per voxel, the same on every axis
    origin: tuple    # (x, y, z) A of the centre of voxel [0, 0, 0]

    def index_to_xyz(self, index_zyx):
        """Physical position (x, y, z, A) of voxel indices ``(..., 3)`` in (z, y, x) order."""
        index_zyx = np.asarray(index_zyx, dtype=np.float64)
        return np.asarray(self.origin, np.float64) + self.apix * np.ascontiguousarray(index_zyx[..., ::-1])

    def xyz_to_index(self, xyz):
        """Fractional voxel indices ``(..., 3)`` in (z, y, x) order of positions ``(..., 3)`` (x, y, z, A)."""
        xyz = np.asarray(xyz, dtype=np.float64)
        return np.ascontiguousarray(((xyz - np.asarray(self.origin, np.float64)) / self.apix)[..., ::-1])

    def nearest_index(self, xyz):
        """Integer (z, y, x) index of the voxel whose centre is nearest to each position.

        ``floor(f + 0.5)``, not ``np.rint``: halves always go up, whatever the parity.
        """
        return np.floor(self.xyz_to_index(xyz) + 0.5).astype(np.int64)

    def contains(self, index_zyx):
        """Which integer indices ``(..., 3)`` lie inside the box."""
        index_zyx = np.asarray(index_zyx)
        return np.all((index_zyx >= 0) & (index_zyx < np.asarray(self.shape)), axis=-1)

    def flat(self, index_zyx):
        """Flat (C-order) index of integer (z, y, x) indices inside the box."""
        return np.ravel_multi_index(tuple(np.asarray(index_zyx).T), self.shape)


def box_centre(size, apix, origin):
    """Physical position (x, y, z, A) of voxel ``size // 2`` of a map: the origin of box coordinates."""
    return np.asarray(origin, dtype=np.float64) + (size // 2) * float(apix)


def centred_origin(size, apix):
    """MRC origin that puts the model frame's (0, 0, 0) at voxel ``size // 2``."""
    return (-(size // 2) * float(apix),) * 3


def model_map(coords, weights, size, apix, resolution=None, sigma=1.0, origin=None, device=None):
    """Map of an atomic model: Gaussian atoms integrated over voxels, optionally low-passed.

    ``coords`` (A, 3) are in the map's frame (x, y, z, A); ``origin`` defaults
    to :func:`centred_origin`.  ``resolution`` (A) applies a hard spherical
    low-pass at ``1/resolution``: the map then holds no information beyond
    it, so its FSC with the model drops to zero there (a Gaussian blur would
    not: FSC ignores the amplitude of a filter).  ``sigma`` (A) is the atoms'
    Gaussian width.  ``device`` (torch) computes there (large boxes on a GPU).
    Returns float64 numpy ``(size,)*3``.
    """
    origin = centred_origin(size, apix) if origin is None else origin
    box = torch.as_tensor(np.asarray(coords, np.float64) - box_centre(size, apix, origin), device=device)
    vol = gaussian_volume(box, np.asarray(weights, np.float64), sigma, size, apix)
    if resolution:
        if resolution < 2 * apix:
            raise ValueError("resolution %.2f A is beyond Nyquist (%.2f A at %.3f A/px)"
                             % (resolution, 2 * apix, apix))
        vol = lowpass(vol, resolution, apix, ndim=3, edge_width_px=0.0)
    return vol.cpu().numpy()


def _linear_along(volume, positions, axis, zero_outside=False):
    """Linear interpolation of ``volume`` at fractional indices ``positions`` along ``axis``.

    Outside ``[0, n - 1]`` the edge value is used, or, with ``zero_outside``, zeros beyond
    the edge (a zero layer is added on both sides, as ``grid_sample``'s zero padding).
    """
    if zero_outside:
        pad = [0] * 6
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = 1
        volume = torch.nn.functional.pad(volume, pad)
        positions = positions + 1
    n = volume.shape[axis]
    low = torch.floor(positions).clamp(0, max(n - 2, 0)).long()
    high = (low + 1).clamp(max=n - 1)
    w = (positions - low.to(positions.dtype)).clamp(0, 1)
    shape = [-1 if a == axis else 1 for a in range(3)]
    a = volume.index_select(axis, low)
    b = volume.index_select(axis, high)
    return a + (b - a) * w.reshape(shape).to(volume.dtype)


def resample_linear(volume, grid, new_grid, zero_outside=False):
    """Trilinear resampling of ``volume`` (torch, on ``grid``) onto ``new_grid`` (same physical frame).

    Trilinear interpolation on axis-aligned grids is separable: three 1D linear
    interpolations, one per axis, which never hold more than one intermediate map
    (a ``grid_sample`` would need a coordinate grid three times the output's size).
    New voxels outside the input box take the nearest edge value, or zero with
    ``zero_outside``.  Down-sampling should follow a low-pass to avoid aliasing.
    """
    out = volume
    for axis in range(3):  # z, y, x
        xyz = 2 - axis
        new_axis = torch.arange(new_grid.shape[axis], dtype=torch.float64)
        pos = (new_grid.origin[xyz] + new_axis * new_grid.apix - grid.origin[xyz]) / grid.apix
        out = _linear_along(out, pos.to(out.device), axis, zero_outside)
    return out


def resample_map(volume, apix, origin, size, new_apix, new_origin):
    """Trilinear resampling of a map onto a cubic grid of ``size`` voxels (same physical frame).

    Voxels of the new grid that fall outside the input box get zero.  Down-
    sampling by more than 1.5x first low-passes the input to the new Nyquist
    frequency, so the result is not aliased.
    """
    vol = torch.as_tensor(np.asarray(volume, np.float64))
    if new_apix > 1.5 * apix:
        vol = lowpass(vol, 2.0 * new_apix, apix, ndim=3, edge_width_px=2.0)
    grid = Grid(tuple(vol.shape), float(apix), tuple(float(o) for o in origin))
    new_grid = Grid((size,) * 3, float(new_apix), tuple(float(o) for o in new_origin))
    return resample_linear(vol, grid, new_grid, zero_outside=True).numpy()


def bin_map(volume, factor):
    """Sum ``factor``^3 blocks (mass-preserving); the box is zero-padded at the end to a multiple."""
    vol = torch.as_tensor(volume)
    if factor == 1:
        return vol
    n = vol.shape[-1]
    m = -(-n // factor)
    pad = m * factor - n
    if pad:
        vol = torch.nn.functional.pad(vol, (0, pad, 0, pad, 0, pad))
    return vol.reshape(m, factor, m, factor, m, factor).sum(dim=(1, 3, 5))
