"""Volume <-> .mrc with sampling rate and origin.

A Scipion volume's origin shifts are the physical position (A) of voxel
(0, 0, 0), i.e. the MRC header origin (pwem writes them there with
``Ccp4Header.setOrigin``); a volume without origin gets Scipion's default
``-dim/2 * sampling``.
"""
import os

from pwem.objects import Transform, Volume

from ..engine.core.io.mrc import read_map, write_map

__all__ = ["volume_file", "volume_origin", "volume_to_mrc", "volume_from_mrc"]


def volume_file(volume):
    """Path of a volume's file without Scipion's ``:mrc`` suffix."""
    fn = volume.getFileName()
    for suffix in (":mrc", ":mrcs"):
        if fn.endswith(suffix):
            fn = fn[: -len(suffix)]
    return fn


def volume_origin(volume):
    return tuple(float(v) for v in volume.getOrigin(force=True).getShifts())


def volume_to_mrc(volume, path, require_cubic=True):
    """Write ``volume`` as an MRC whose header carries Scipion's sampling and origin.

    Returns (array, apix, origin).  Raises ValueError (with the file name) for
    unreadable, non-cubic or NaN maps.
    """
    src = volume_file(volume)
    data, _ = read_map(src, require_cubic=require_cubic)
    apix = float(volume.getSamplingRate())
    origin = volume_origin(volume)
    write_map(path, data, apix, origin)
    return data, apix, origin


def volume_from_mrc(path, half_maps=None, cls=Volume):
    """A Scipion Volume (or subclass) for an MRC file, with its header's sampling and origin."""
    data, info = read_map(path)
    vol = cls()
    vol.setFileName(path)
    vol.setSamplingRate(info.apix)
    origin = Transform()
    origin.setShifts(*info.origin)
    vol.setOrigin(origin)
    if half_maps:
        vol.setHalfMaps([os.path.relpath(h) if os.path.isabs(h) else h for h in half_maps])
    return vol
