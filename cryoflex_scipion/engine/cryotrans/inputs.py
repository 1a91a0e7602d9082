"""Checks and preparation of the CryoTRANS inputs: the two maps on one grid, and the partition masks.

Every check here runs before any training, so a wrong input costs seconds
and says what to change.
"""
import numpy as np

from ..core import validate
from ..core.maps import resample_map
from ..core.errors import EngineInputError

__all__ = ["InputError", "same_grid", "check_map", "target_on_grid", "labels_from_masks"]


class InputError(EngineInputError):
    """An input that CryoTRANS cannot use, with what to do about it."""


def check_map(name, data, info):
    """A cubic, finite, non-constant 3D map."""
    if data.ndim != 3 or len(set(data.shape)) != 1:
        raise InputError("%s is %s voxels: CryoTRANS needs a cubic box (resize it, e.g. with "
                         "'relion_image_handler --new_box')" % (name, "x".join(str(s) for s in data.shape[::-1])))
    validate.check_map(data, info.apix, name)


def same_grid(info0, info1, tolerance=1e-3):
    """Whether two maps share shape, voxel size and origin (origins within half a voxel)."""
    return (tuple(info0.shape) == tuple(info1.shape)
            and abs(info0.apix - info1.apix) <= tolerance * info0.apix
            and np.allclose(info0.origin, info1.origin, atol=0.5 * info0.apix))


def target_on_grid(map1, info0, info1, resample):
    """The target map on the initial map's grid: as is, resampled, or an :class:`InputError`."""
    if same_grid(info0, info1):
        return np.asarray(map1, np.float64), False
    if not resample:
        raise InputError(
            "the target map (%s voxels, %.4f A/px, origin %s) is not on the initial map's grid "
            "(%s voxels, %.4f A/px, origin %s): resample it onto that grid (--resample) or provide maps "
            "on one grid" % ("x".join(map(str, info1.shape[::-1])), info1.apix, tuple(round(o, 2) for o in info1.origin),
                             "x".join(map(str, info0.shape[::-1])), info0.apix,
                             tuple(round(o, 2) for o in info0.origin)))
    out = resample_map(map1, info1.apix, info1.origin, info0.shape[0], info0.apix, info0.origin)
    if not np.any(out != 0):
        raise InputError("the target map does not overlap the initial map's box after resampling "
                         "(check the origins in the headers)")
    return out, True


def labels_from_masks(masks, shape, support):
    """Partition labels (int, full grid) from ``K`` masks of the initial map.

    Voxel values above 0.5 belong to a mask.  A voxel in several masks goes
    to the first; voxels of ``support`` (the thresholded initial map) in no
    mask form an extra part ``K``, so no density is left without a field.
    Returns ``(labels, n_parts, info)`` with ``info`` a list of messages.
    """
    if not masks:
        return None, 1, []
    labels = np.full(shape, -1, dtype=np.int64)
    notes = []
    for k, (name, mask) in enumerate(masks):
        if mask.shape != tuple(shape):
            raise InputError("mask %s is %s voxels but the initial map is %s" % (
                name, "x".join(map(str, mask.shape[::-1])), "x".join(map(str, tuple(shape)[::-1]))))
        inside = mask > 0.5
        n_support = int((inside & support).sum())
        if n_support == 0:
            raise InputError("mask %s covers no voxel of the initial map above its threshold" % name)
        overlap = int((inside & (labels >= 0)).sum())
        if overlap:
            notes.append("mask %s overlaps earlier masks on %d voxels: they stay with the earlier mask" % (name, overlap))
        labels[inside & (labels < 0)] = k
    rest = support & (labels < 0)
    n_parts = len(masks)
    if rest.any():
        notes.append("%d voxels above threshold are in no mask: they form part %d with its own field"
                     % (int(rest.sum()), n_parts + 1))
        labels[rest] = n_parts
        n_parts += 1
    labels[labels < 0] = 0  # voxels without density carry no particle; their label is irrelevant
    return labels, n_parts, notes
