"""MRC maps and image stacks (mrcfile), with voxel size and origin.

Maps are returned as float32 arrays ``[z, y, x]``.  The origin is the MRC
header's ``origin`` field in A (the physical position of voxel (0, 0, 0)),
as written by RELION, ChimeraX and Scipion.  Malformed headers are read
permissively when the data can still be interpreted; otherwise a
:class:`MRCError` names the file and the problem.
"""
import os
import warnings
from dataclasses import dataclass

import numpy as np

__all__ = ["MRCError", "MapInfo", "read_map", "write_map", "map_info", "open_stack", "StackWriter"]


class MRCError(ValueError):
    """An MRC file that cannot be used, with the file name in the message."""


@dataclass
class MapInfo:
    shape: tuple          # (nz, ny, nx) for maps, (n, ny, nx) for stacks
    apix: float           # A per voxel (x)
    origin: tuple         # (x, y, z) in A of voxel (0, 0, 0)
    warnings: tuple = ()  # problems tolerated by the permissive reader


def _mrcfile():
    try:
        import mrcfile
    except ImportError as exc:  # pragma: no cover - mrcfile is a declared dependency
        raise ImportError("the CryoFlex engine needs the 'mrcfile' package (pip install mrcfile)") from exc
    return mrcfile


def _open(path, mmap=False):
    mrcfile = _mrcfile()
    if not os.path.exists(path):
        raise MRCError("%s: file not found" % path)
    opener = mrcfile.mmap if mmap else mrcfile.open
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            handle = opener(path, mode="r", permissive=True)
        except Exception as exc:  # mrcfile raises ValueError/OSError/IndexError on broken files
            raise MRCError("%s: not a readable MRC file (%s)" % (path, exc)) from exc
    problems = tuple(str(w.message) for w in caught)
    if handle.data is None:
        handle.close()
        raise MRCError("%s: MRC header is invalid and the data cannot be interpreted (%s)"
                       % (path, "; ".join(problems) or "unknown mode or size"))
    expected = handle.header.nx * handle.header.ny * handle.header.nz
    if handle.data.size != expected:
        handle.close()
        raise MRCError("%s: header declares %d x %d x %d values but the file holds %d"
                       % (path, handle.header.nx, handle.header.ny, handle.header.nz, handle.data.size))
    return handle, problems


def _apix(handle):
    vs = handle.voxel_size
    apix = float(vs.x)
    if not np.isfinite(apix) or apix <= 0:
        return 0.0
    return apix


def _origin(handle):
    """Origin in A: the header's origin, or ``n*start * apix`` for CCP4-style maps."""
    h = handle.header
    origin = (float(h.origin.x), float(h.origin.y), float(h.origin.z))
    if not all(np.isfinite(origin)):
        origin = (0.0, 0.0, 0.0)
    if origin == (0.0, 0.0, 0.0) and (int(h.nxstart), int(h.nystart), int(h.nzstart)) != (0, 0, 0):
        vs = handle.voxel_size
        origin = (float(h.nxstart) * float(vs.x), float(h.nystart) * float(vs.y), float(h.nzstart) * float(vs.z))
    return origin


def _to_zyx(handle, data):
    """Reorder a map whose header declares non-standard axes (MAPC/MAPR/MAPS) to [z, y, x]."""
    h = handle.header
    axes = [int(h.maps), int(h.mapr), int(h.mapc)]  # physical axis of file axes 0, 1, 2
    if axes == [3, 2, 1] or sorted(axes) != [1, 2, 3] or data.ndim != 3:
        return data
    return np.transpose(data, [axes.index(3), axes.index(2), axes.index(1)])


def map_info(path):
    handle, problems = _open(path, mmap=True)
    try:
        return MapInfo(tuple(int(s) for s in handle.data.shape), _apix(handle), _origin(handle), problems)
    finally:
        handle.close()


def read_map(path, require_cubic=False):
    """Read a 3D map -> (float32 array [z, y, x], :class:`MapInfo`)."""
    handle, problems = _open(path)
    try:
        data = _to_zyx(handle, np.asarray(handle.data, dtype=np.float32))
        info = MapInfo(tuple(data.shape), _apix(handle), _origin(handle), problems)
    finally:
        handle.close()
    if data.ndim == 2:
        data = data[None]
    if require_cubic and len(set(data.shape)) != 1:
        raise MRCError("%s: map is %s voxels; a cubic box is required (pad or resample it first)"
                       % (path, "x".join(str(s) for s in data.shape[::-1])))
    if not np.all(np.isfinite(data)):
        raise MRCError("%s: map contains NaN or infinite values" % path)
    return data, info


def write_map(path, data, apix, origin=(0.0, 0.0, 0.0), is_stack=False):
    """Write a map (or a stack of images with ``is_stack``) as float32 MRC."""
    mrcfile = _mrcfile()
    data = np.ascontiguousarray(np.asarray(data, dtype=np.float32))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(data)
        if is_stack and data.ndim == 3:
            m.set_image_stack()
        m.voxel_size = apix
        m.header.origin.x, m.header.origin.y, m.header.origin.z = origin
        m.update_header_stats()


def open_stack(path):
    """Memory-map an image stack; returns (mmap handle, :class:`MapInfo`).

    ``handle.data`` is ``(n, ny, nx)`` (a single image is ``(1, ny, nx)``).  The
    caller closes the handle.  Only the images that are indexed are read.
    """
    handle, problems = _open(path, mmap=True)
    shape = handle.data.shape
    if len(shape) == 2:
        shape = (1,) + tuple(shape)
    return handle, MapInfo(tuple(int(s) for s in shape), _apix(handle), _origin(handle), problems)


class StackWriter:
    """Write ``n`` images of ``size`` x ``size`` to a new .mrcs in batches (memory-mapped)."""

    def __init__(self, path, n, size, apix):
        mrcfile = _mrcfile()
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path, self.n = path, n
        self._handle = mrcfile.new_mmap(path, shape=(n, size, size), mrc_mode=2, overwrite=True)
        self._handle.set_image_stack()
        self._handle.voxel_size = apix
        self._next = 0
        # Header statistics accumulated batch by batch: recomputing them at the end
        # would read the whole stack back from disk.
        self._min, self._max, self._sum, self._sumsq = np.inf, -np.inf, 0.0, 0.0

    def write(self, images):
        images = np.asarray(images, dtype=np.float32)
        end = self._next + images.shape[0]
        if end > self.n:
            raise ValueError("%s: writing past the declared %d images" % (self.path, self.n))
        self._handle.data[self._next:end] = images
        self._next = end
        self._min = min(self._min, float(images.min()))
        self._max = max(self._max, float(images.max()))
        self._sum += float(images.sum(dtype=np.float64))
        flat = images.reshape(-1)
        self._sumsq += float(np.dot(flat.astype(np.float64), flat))

    def _set_stats(self):
        count = float(self.n) * self._handle.data.shape[-1] * self._handle.data.shape[-2]
        mean = self._sum / count
        header = self._handle.header
        header.dmin, header.dmax, header.dmean = self._min, self._max, mean
        header.rms = np.sqrt(max(self._sumsq / count - mean * mean, 0.0))

    def close(self):
        if self._handle is not None:
            if self._next != self.n:
                self._handle.close()
                self._handle = None
                raise ValueError("%s: %d of %d images written" % (self.path, self._next, self.n))
            self._set_stats()
            self._handle.close()
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.close()
        elif self._handle is not None:
            self._handle.close()
            self._handle = None
