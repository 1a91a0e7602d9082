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

from ..errors import EngineInputError

__all__ = ["MRCError", "MapInfo", "read_map", "write_map", "map_info", "open_stack", "stack_header", "StackWriter"]


class MRCError(EngineInputError):
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


class _MappedStack:
    """An MRC file's header with its data as a read-only ``numpy.memmap``.

    mrcfile 1.4.3 computes the data size of a memory-mapped file from the header's int32 fields, which
    overflows under numpy 2 for files over 2 GiB (``OverflowError ... out of bounds for int32``).  Here
    mrcfile reads the header only; offset, shape and the file-size check use Python integers.
    """

    def __init__(self, header, voxel_size, data):
        self.header, self.voxel_size, self.data = header, voxel_size, data

    def close(self):
        self.data = None

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()


def _open(path, mmap=False):
    mrcfile = _mrcfile()
    if not os.path.exists(path):
        raise MRCError("%s: file not found" % path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            handle = mrcfile.open(path, mode="r", permissive=True, header_only=mmap)
        except Exception as exc:  # mrcfile raises ValueError/OSError/IndexError on broken files
            raise MRCError("%s: not a readable MRC file (%s)" % (path, exc)) from exc
        if mmap:
            handle = _map_data(path, handle)
    problems = tuple(str(w.message) for w in caught)
    if handle.data is None:
        handle.close()
        raise MRCError("%s: MRC header is invalid and the data cannot be interpreted (%s)"
                       % (path, "; ".join(problems) or "unknown mode or size"))
    if np.iscomplexobj(handle.data):
        mode = int(handle.header.mode)
        handle.close()
        raise MRCError("%s: complex-valued data (MRC mode %d, e.g. a Fourier transform); real images or maps "
                       "are needed" % (path, mode))
    expected = int(handle.header.nx) * int(handle.header.ny) * int(handle.header.nz)
    if handle.data.size != expected:
        handle.close()
        raise MRCError("%s: header declares %d x %d x %d values but the file holds %d"
                       % (path, handle.header.nx, handle.header.ny, handle.header.nz, handle.data.size))
    return handle, problems


def _map_data(path, header_handle):
    """A :class:`_MappedStack` of a file whose header mrcfile has read (``header_only``)."""
    from mrcfile import utils
    header = header_handle.header
    try:
        voxel_size = header_handle.voxel_size
    finally:
        header_handle.close()
    if header is None:
        return _MappedStack(None, None, None)
    try:
        dtype = utils.data_dtype_from_header(header)
    except ValueError as exc:
        warnings.warn("%s - data block not read" % exc, RuntimeWarning)
        return _MappedStack(header, voxel_size, None)
    shape = tuple(int(s) for s in utils.data_shape_from_header(header))
    offset = int(header.nbytes) + int(header.nsymbt)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    available = os.path.getsize(path) - offset
    if nbytes > available:
        warnings.warn("the file holds %d data bytes but its header declares %d" % (max(available, 0), nbytes),
                      RuntimeWarning)
        return _MappedStack(header, voxel_size, None)
    if nbytes < available:
        warnings.warn("MRC file is %d bytes larger than expected" % (available - nbytes), RuntimeWarning)
    data = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape) if nbytes else \
        np.zeros(shape, dtype=dtype)
    return _MappedStack(header, voxel_size, data)


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


def stack_header(n, size, apix, origin=(0.0, 0.0, 0.0)):
    """The 1024-byte MRC header (numpy record) of a float32 stack of ``n`` images of ``size`` px.

    mrcfile builds it as ``mrcfile.new`` + ``set_data`` + ``set_image_stack`` would (ispg 0, mz 1, so
    RELION and mrcfile read an image stack), from a zero-stride array of the declared shape: no data is
    allocated or mapped.  Statistics are mrcfile's "not computed" values until :class:`StackWriter`
    sets them.
    """
    from mrcfile.mrcinterpreter import MrcInterpreter
    mrc = MrcInterpreter()
    mrc._create_default_attributes()
    mrc._set_new_data(np.broadcast_to(np.zeros((), np.float32), (int(n), int(size), int(size))))
    mrc.update_header_from_data()
    mrc.set_image_stack()
    mrc.voxel_size = apix
    mrc.header.origin.x, mrc.header.origin.y, mrc.header.origin.z = origin
    header = mrc.header
    mrc._set_new_data(np.empty(0, np.float32))
    return header


def _pwrite(fd, buf, offset):
    """Write all of ``buf`` at ``offset`` (a write may be short: Linux caps one at about 2 GiB)."""
    view = memoryview(buf).cast("B")
    while len(view):
        if hasattr(os, "pwrite"):
            done = os.pwrite(fd, view, offset)
        else:  # pragma: no cover - Windows
            os.lseek(fd, offset, os.SEEK_SET)
            done = os.write(fd, view)
        view, offset = view[done:], offset + done


class StackWriter:
    """Write a new float32 .mrcs of ``n`` images of ``size`` x ``size`` px, batch by batch.

    The header is written at once for the declared shape (the file is extended to its full size, sparse
    where the file system allows); images go to their place with positioned writes, so memory stays
    bounded by a batch and nothing depends on memory-mapping the file (mrcfile's memory map overflows
    int32 under numpy 2 for stacks over 2 GiB).  :meth:`write` appends after the last batch, or puts a
    batch at an explicit ``start`` index (batches from several workers, in any order).  Header statistics
    (min, max, mean, rms) are accumulated over the batches and written by :meth:`close`, which checks
    that every image was written exactly once (``allow_unwritten=True`` leaves missing images as zeros,
    counted in the statistics).  Use it as a context manager: on an exception the file is closed
    without the check.
    """

    HEADER_BYTES = 1024

    def __init__(self, path, n, size, apix, origin=(0.0, 0.0, 0.0)):
        if n < 1 or size < 1:
            raise ValueError("%s: a stack needs at least one image of at least 1 px (got %d x %d px)"
                             % (path, n, size))
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path, self.n, self.size = path, int(n), int(size)
        self._header = stack_header(n, size, apix, origin)
        self._image_bytes = self.size * self.size * 4
        flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
        self._fd = os.open(path, flags, 0o666)
        try:
            os.ftruncate(self._fd, self.HEADER_BYTES + self.n * self._image_bytes)
            self.write_header()
        except BaseException:
            os.close(self._fd)
            self._fd = None
            raise
        self._written = np.zeros(self.n, dtype=bool)
        self._next = 0
        # Header statistics accumulated batch by batch: recomputing them at the end
        # would read the whole stack back from disk.
        self._min, self._max, self._sum, self._sumsq = np.inf, -np.inf, 0.0, 0.0

    @property
    def written(self):
        """Number of images written so far."""
        return int(self._written.sum())

    def write(self, images, start=None):
        """Write a batch ``(k, size, size)`` (or one image) at index ``start`` (default: after the last
        batch); returns the index after it.  Raises ValueError for a wrong shape, a batch past the
        declared end or an image written twice."""
        if self._fd is None:
            raise ValueError("%s: the stack writer is closed" % self.path)
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 2:
            images = images[None]
        if images.shape[1:] != (self.size, self.size):
            raise ValueError("%s: images of shape %s for a stack of %d x %d px"
                             % (self.path, images.shape[1:], self.size, self.size))
        start = self._next if start is None else int(start)
        end = start + images.shape[0]
        if start < 0 or end > self.n:
            raise ValueError("%s: images %d-%d are outside the declared %d" % (self.path, start, end - 1, self.n))
        if self._written[start:end].any():
            again = start + int(np.argmax(self._written[start:end]))
            raise ValueError("%s: image %d written twice" % (self.path, again))
        if images.shape[0] == 0:
            return end
        images = np.ascontiguousarray(images, dtype=np.dtype(np.float32).newbyteorder(
            self._header.mode.dtype.byteorder))
        _pwrite(self._fd, images, self.HEADER_BYTES + start * self._image_bytes)
        self._written[start:end] = True
        self._next = end
        self._min = min(self._min, float(images.min()))
        self._max = max(self._max, float(images.max()))
        flat = images.reshape(-1).astype(np.float64)
        self._sum += float(flat.sum())
        self._sumsq += float(np.dot(flat, flat))
        return end

    def _set_stats(self):
        unwritten = self.n - self.written
        lo, hi = (self._min, self._max) if not unwritten else (min(self._min, 0.0), max(self._max, 0.0))
        count = float(self.n) * self.size * self.size  # unwritten images are zeros
        mean = self._sum / count
        header = self._header
        header.dmin, header.dmax, header.dmean = lo, hi, mean
        header.rms = np.sqrt(max(self._sumsq / count - mean * mean, 0.0))

    def write_header(self):
        """(Re)write the header; with statistics once :meth:`close` has set them."""
        _pwrite(self._fd, self._header.tobytes(), 0)

    def close(self, allow_unwritten=False):
        """Write the statistics into the header and close; ValueError when images are missing (unless
        ``allow_unwritten``: they stay zeros)."""
        if self._fd is None:
            return
        try:
            missing = self.n - self.written
            if missing and not allow_unwritten:
                first = int(np.argmin(self._written))
                raise ValueError("%s: %d of %d images written (image %d is missing)"
                                 % (self.path, self.n - missing, self.n, first))
            self._set_stats()
            self.write_header()
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.close()
        elif self._fd is not None:
            os.close(self._fd)
            self._fd = None
