"""Grids of any shape (non-cubic allowed): voxel index <-> physical position, filtering, resampling.

A grid is ``shape = (nz, ny, nx)``, a voxel size ``apix`` (A) and an ``origin``
``(x, y, z)`` in A: the physical position of the *centre* of voxel
``[0, 0, 0]`` (the MRC header field, as :mod:`core.io.mrc` reads it).  Voxel
``[k, j, i]`` (array order z, y, x) sits at ``origin + apix * (i, j, k)``.
The original DEFMap ignored the origin (voxel = round(xyz / apix) - nxstart);
here every conversion goes through these two functions.

The helpers of :mod:`core.maps` assume cubic boxes; these work on any box.
"""
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Grid", "resampled_grid", "gaussian_lowpass", "resample_linear", "nearest_resample"]


@dataclass(frozen=True)
class Grid:
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


def resampled_grid(grid, new_apix):
    """The grid of voxel size ``new_apix`` covering the same physical extent, with the same origin.

    Along each axis the input spans ``origin .. origin + (n - 1) * apix``; the new grid has
    ``floor((n - 1) * apix / new_apix) + 1`` voxels from the same origin, so none of them
    falls outside the input (no extrapolation).
    """
    shape = tuple(int(np.floor((n - 1) * grid.apix / new_apix + 1e-6)) + 1 for n in grid.shape)
    return Grid(shape, float(new_apix), tuple(float(o) for o in grid.origin))


def gaussian_lowpass(volume, resolution, apix):
    """Gaussian low-pass of a map of any shape: spectrum times ``exp(-k^2 / (2 kc^2))``, ``kc = 1/resolution``.

    The same filter family as the original DEFMap's EMAN2 ``filter.lowpass.gauss`` with
    ``cutoff_freq = 1/resolution`` (amplitude exp(-1/2) = 0.61 at the cut-off).  The map is
    edge-padded by three real-space widths (``sigma = 1 / (2 pi kc)``) before the FFT so that
    density at one face of a tightly cropped box does not wrap around to the other.
    ``volume`` is a torch tensor ``(nz, ny, nx)``; the result has its dtype and device.
    """
    sigma_px = resolution / (2 * np.pi * apix)
    pad = int(np.ceil(3 * sigma_px)) + 1
    padded = torch.nn.functional.pad(volume[None, None], (pad,) * 6, mode="replicate")[0, 0]
    shape = padded.shape
    spec = torch.fft.rfftn(padded)
    k2 = 0
    for axis, n in enumerate(shape):
        k = torch.fft.rfftfreq(n, d=apix) if axis == 2 else torch.fft.fftfreq(n, d=apix)
        k = k.to(device=volume.device, dtype=volume.dtype)
        k2 = k2 + (k ** 2).reshape([-1 if a == axis else 1 for a in range(3)])
    spec *= torch.exp(-k2 * (0.5 * resolution ** 2))
    out = torch.fft.irfftn(spec, s=shape)
    return out[pad:pad + volume.shape[0], pad:pad + volume.shape[1], pad:pad + volume.shape[2]]


def _linear_along(volume, positions, axis):
    """Linear interpolation of ``volume`` at fractional indices ``positions`` along ``axis``."""
    n = volume.shape[axis]
    low = torch.floor(positions).clamp(0, max(n - 2, 0)).long()
    high = (low + 1).clamp(max=n - 1)
    w = (positions - low.to(positions.dtype)).clamp(0, 1)
    shape = [-1 if a == axis else 1 for a in range(3)]
    a = volume.index_select(axis, low)
    b = volume.index_select(axis, high)
    return a + (b - a) * w.reshape(shape).to(volume.dtype)


def resample_linear(volume, grid, new_grid):
    """Trilinear resampling of ``volume`` (torch, on ``grid``) onto ``new_grid`` (same physical frame).

    Trilinear interpolation on axis-aligned grids is separable: three 1D linear
    interpolations, one per axis, which never hold more than one intermediate map
    (a ``grid_sample`` would need a coordinate grid three times the output's size).
    New voxels outside the input box take the nearest edge value; with
    :func:`resampled_grid` there are none.  Down-sampling should follow a low-pass
    (:func:`gaussian_lowpass`) to avoid aliasing.
    """
    out = volume
    for axis in range(3):  # z, y, x
        xyz = 2 - axis
        new_axis = torch.arange(new_grid.shape[axis], dtype=torch.float64)
        pos = (new_grid.origin[xyz] + new_axis * new_grid.apix - grid.origin[xyz]) / grid.apix
        out = _linear_along(out, pos.to(out.device), axis)
    return out


def nearest_resample(volume, grid, new_grid, fill=0.0):
    """Nearest-voxel resampling (numpy): every voxel of ``new_grid`` takes the value of the nearest
    voxel of ``grid``, or ``fill`` outside it.  Used to bring sparse predictions (zero outside the
    predicted voxels) back to the input grid without smearing zeros into them."""
    volume = np.asarray(volume)
    index = []
    for axis in range(3):
        xyz = 2 - axis
        pos = (new_grid.origin[xyz] + np.arange(new_grid.shape[axis]) * new_grid.apix - grid.origin[xyz]) / grid.apix
        index.append(np.floor(pos + 0.5).astype(np.int64))
    inside = [(i >= 0) & (i < n) for i, n in zip(index, grid.shape)]
    clipped = [np.clip(i, 0, n - 1) for i, n in zip(index, grid.shape)]
    out = volume[np.ix_(*clipped)].astype(np.float32)
    mask = inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :]
    out[~mask] = fill
    return out
