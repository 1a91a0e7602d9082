"""Grids of any shape (non-cubic allowed): voxel index <-> physical position, filtering, resampling.

A grid is ``shape = (nz, ny, nx)``, a voxel size ``apix`` (A) and an ``origin``
``(x, y, z)`` in A: the physical position of the *centre* of voxel
``[0, 0, 0]`` (the MRC header field, as :mod:`core.io.mrc` reads it).  Voxel
``[k, j, i]`` (array order z, y, x) sits at ``origin + apix * (i, j, k)``.
The original DEFMap ignored the origin (voxel = round(xyz / apix) - nxstart);
here every conversion goes through these two functions.

:class:`Grid` and trilinear :func:`resample_linear` live in :mod:`core.maps` (CryoTRANS
resamples with them too); this module adds DEFMap's grid choice, filter and nearest-voxel
resampling.
"""
import numpy as np
import torch

from ..core.maps import Grid, resample_linear

__all__ = ["Grid", "resampled_grid", "gaussian_lowpass", "resample_linear", "nearest_resample"]


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
