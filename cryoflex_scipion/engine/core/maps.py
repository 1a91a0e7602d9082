"""Maps as arrays on a grid: maps of atomic models, resampling between grids, binning.

A map is an array ``V[z, y, x]`` with a voxel size ``apix`` and an ``origin``
(x, y, z in A: the physical position of voxel (0, 0, 0), the MRC header
field).  Box coordinates (:mod:`geometry`) are relative to voxel ``D // 2``,
so a model given in the map's frame is moved into box coordinates by
subtracting :func:`box_centre`.
"""
import numpy as np
import torch

from .fourier import lowpass
from .projection import gaussian_volume

__all__ = ["box_centre", "centred_origin", "model_map", "resample_map", "bin_map"]


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


def resample_map(volume, apix, origin, size, new_apix, new_origin):
    """Trilinear resampling of a map onto another cubic grid (same physical frame).

    Voxels of the new grid that fall outside the input box get zero.  Down-
    sampling by more than 1.5x first low-passes the input to the new Nyquist
    frequency, so the result is not aliased.
    """
    vol = torch.as_tensor(np.asarray(volume, np.float64))
    if new_apix > 1.5 * apix:
        vol = lowpass(vol, 2.0 * new_apix, apix, ndim=3, edge_width_px=2.0)
    # Physical coordinates of the new voxels, then fractional indices in the input.
    axis = np.arange(size) * float(new_apix)
    new_origin = np.asarray(new_origin, np.float64)
    origin = np.asarray(origin, np.float64)
    idx = [(axis + new_origin[a] - origin[a]) / float(apix) for a in range(3)]  # x, y, z
    d, h, w = vol.shape
    # grid_sample with align_corners=True: -1 and +1 are the centres of the first and last voxels.
    norm = [torch.as_tensor(2.0 * i / (n - 1) - 1.0) for i, n in zip(idx, (w, h, d))]
    gz, gy, gx = torch.meshgrid(norm[2], norm[1], norm[0], indexing="ij")
    grid = torch.stack([gx, gy, gz], -1)[None]
    out = torch.nn.functional.grid_sample(vol[None, None], grid, mode="bilinear", padding_mode="zeros",
                                          align_corners=True)
    return out[0, 0].numpy()


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
