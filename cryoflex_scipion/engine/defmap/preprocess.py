"""DEFMap's map preparation: low-pass, resample to 1.5 A/voxel, standardise, threshold.

Steps, in this order (:func:`prepare_map`):

1. Gaussian low-pass to the model's resolution (5, 6 or 7 A) on the *input* grid
   (:func:`grid.gaussian_lowpass`), which also damps what 1.5 A voxels cannot hold
   before step 2 (at 5 A the filter is 0.25 at the 3 A Nyquist frequency of the new
   grid and 0.06 at 2.1 A, and trilinear interpolation damps further): little aliasing.
2. Trilinear resampling to 1.5 A voxels over the same physical extent and with the
   same origin (:func:`grid.resampled_grid`, :func:`grid.resample_linear`).  The map may
   have any shape.
3. Standardisation over the whole resampled box, ``z = (v - mean) / std``, then
   negatives set to 0 (as in the original).  Note that the box mean and standard
   deviation depend on how much solvent the box holds: a map cropped tightly around
   the molecule gives smaller values than the same map in a large box.
4. Kept voxels: ``z > threshold``.  Default threshold :data:`DEFAULT_THRESHOLD` = 1.0
   standard deviation above the box mean (the original left the threshold to the
   user).  Alternatively a contour level in the units of the *input* map
   (``contour``, e.g. the EMDB recommended level) selects the voxels where the
   input map, trilinearly resampled without filtering, is above it.
"""
from dataclasses import dataclass

import numpy as np
import torch

from ..core.errors import EngineInputError
from .grid import Grid, gaussian_lowpass, resample_linear, resampled_grid

__all__ = ["VOXEL_SIZE", "DEFAULT_THRESHOLD", "RESOLUTIONS", "MapError", "PreparedMap", "check_map", "prepare_map",
           "kept_voxels", "threshold_rule"]

VOXEL_SIZE = 1.5          # A: the paper's voxel size, which the network's 10-voxel box (15 A) assumes
DEFAULT_THRESHOLD = 1.0   # standardised units (box standard deviations above the box mean)
RESOLUTIONS = (5.0, 6.0, 7.0)


class MapError(EngineInputError):
    """A map that DEFMap cannot use, with the reason."""


@dataclass
class PreparedMap:
    values: torch.Tensor   # (nz, ny, nx) float32 standardised, negatives 0, on the 1.5 A grid
    grid: Grid             # the 1.5 A grid (input origin kept)
    input_grid: Grid       # the grid of the input map
    mean: float            # box mean and standard deviation of the low-passed resampled map,
    std: float             # in input units (the z-score's parameters)
    resolution: float
    contour_mask: torch.Tensor = None  # (nz, ny, nx) bool when a contour level was given


def check_map(volume, apix):
    """Raise :class:`MapError` for maps DEFMap cannot use (NaN, no voxel size, flat, too small)."""
    volume = np.asarray(volume) if not torch.is_tensor(volume) else volume
    if apix is None or not np.isfinite(apix) or apix <= 0:
        raise MapError("the map has no pixel size (header voxel size is %r); set it (e.g. with --apix)" % apix)
    if volume.ndim != 3 or min(volume.shape) < 2:
        raise MapError("a 3D map is needed, got shape %s" % (tuple(volume.shape),))
    finite = torch.isfinite(volume).all() if torch.is_tensor(volume) else np.isfinite(volume).all()
    if not bool(finite):
        raise MapError("the map contains NaN or infinite values")
    if float(volume.max()) == float(volume.min()):
        raise MapError("the map is constant (%g everywhere)" % float(volume.max()))


def prepare_map(volume, apix, origin, resolution, device="cpu", contour=None, voxel_size=VOXEL_SIZE):
    """Steps 1-3 of the module docstring: a :class:`PreparedMap` on ``device``.

    ``volume`` is ``(nz, ny, nx)`` (numpy or torch) with voxel size ``apix`` and ``origin``
    (x, y, z, A of voxel [0, 0, 0]).  ``contour`` (input units) is kept as a mask for
    :func:`kept_voxels`.  Works in float32 on the device: a 400^3 map needs about 1.5 GB.
    """
    check_map(volume, apix)
    if resolution < 2 * voxel_size:
        raise MapError("resolution %.2f A is finer than the %.2f A Nyquist limit of %.2f A voxels"
                       % (resolution, 2 * voxel_size, voxel_size))
    grid = Grid(tuple(int(s) for s in volume.shape), float(apix), tuple(float(o) for o in origin))
    new_grid = resampled_grid(grid, voxel_size)
    if not torch.is_tensor(volume):
        volume = np.array(volume, dtype=np.float32)  # a copy: maps read from files may be read-only
    vol = torch.as_tensor(volume, dtype=torch.float32).to(device)
    mask = None
    if contour is not None:
        mask = resample_linear(vol, grid, new_grid) > contour
    values = resample_linear(gaussian_lowpass(vol, resolution, apix), grid, new_grid)
    del vol
    mean = float(values.double().mean())
    std = float(values.double().std())
    if not std > 0:
        raise MapError("the map is flat after low-pass filtering to %.1f A" % resolution)
    values = ((values - mean) / std).clamp_min_(0.0)
    return PreparedMap(values.contiguous(), new_grid, grid, mean, std, float(resolution), mask)


def kept_voxels(prepared, threshold=None):
    """(z, y, x) indices ``(N, 3)`` (int64 numpy) of the voxels DEFMap predicts.

    With a contour level given to :func:`prepare_map`, the voxels above it; otherwise the
    voxels whose standardised value is above ``threshold`` (default :data:`DEFAULT_THRESHOLD`).
    """
    if prepared.contour_mask is not None:
        mask = prepared.contour_mask
    else:
        mask = prepared.values > (DEFAULT_THRESHOLD if threshold is None else float(threshold))
    return torch.nonzero(mask).cpu().numpy().astype(np.int64)


def threshold_rule(prepared, threshold=None, contour=None):
    """One line describing which voxels were kept (for summaries and the model file)."""
    if contour is not None:
        return "input map above contour %g (trilinear on the 1.5 A grid, before filtering)" % contour
    t = DEFAULT_THRESHOLD if threshold is None else float(threshold)
    return "standardised low-passed map > %g (box mean + %g box standard deviations)" % (t, t)
