"""Stream particle images from their stacks in batches (never all in RAM)."""
import os

import numpy as np

from .mrc import MRCError, open_stack

__all__ = ["ImageSource"]


class ImageSource:
    """Read the images of a :class:`ParticleTable` by position, in batches.

    Each stack's header is read once (data offset, type, shape); a batch then reads only the
    requested images with positioned reads, consecutive images in one read, sorted per stack
    for sequential disk access, and returns float32 ``(n, D, D)`` in the order asked for.
    Plain reads (not a memory map) keep the process's resident memory bounded by the batch,
    whatever the size of the stacks.
    """

    def __init__(self, table, data_root=None):
        self.table = table
        self._paths = table.resolved_files(data_root)
        self._handles = {}
        self.size = int(table.box[0]) if len(table) else 0

    def __len__(self):
        return len(self.table)

    def _stack(self, name):
        """(file descriptor, data offset, dtype, (n, ny, nx)) of a stack, opened once."""
        entry = self._handles.get(name)
        if entry is None:
            handle, info = open_stack(self._paths[name])
            try:
                data = handle.data
                offset, dtype = int(data.offset), data.dtype
            finally:
                handle.close()
            if info.shape[-1] != info.shape[-2]:
                raise MRCError("%s: images are %dx%d; square images are required"
                               % (self._paths[name], info.shape[-1], info.shape[-2]))
            fd = os.open(self._paths[name], os.O_RDONLY)
            entry = (fd, offset, dtype, info.shape)
            self._handles[name] = entry
        return entry

    @staticmethod
    def _read_run(fd, offset, dtype, shape, first, count):
        """``count`` consecutive images from index ``first``."""
        per_image = shape[-1] * shape[-2]
        nbytes = count * per_image * dtype.itemsize
        buf = os.pread(fd, nbytes, offset + first * per_image * dtype.itemsize)
        if len(buf) != nbytes:
            raise MRCError("stack is shorter than its header says (read %d of %d bytes)" % (len(buf), nbytes))
        return np.frombuffer(buf, dtype=dtype).reshape(count, shape[-2], shape[-1])

    def read(self, positions):
        """Images at ``positions`` (indices into the table)."""
        positions = np.asarray(positions, dtype=np.int64)
        out = np.empty((len(positions), self.size, self.size), dtype=np.float32)
        files = np.asarray(self.table.image_file)[positions]
        index = np.asarray(self.table.image_index)[positions]
        for name in np.unique(files):
            sel = np.nonzero(files == name)[0]
            fd, offset, dtype, shape = self._stack(str(name))
            if shape[-1] != self.size:
                raise MRCError("%s: images are %d px but the particles declare %d px"
                               % (self._paths[str(name)], shape[-1], self.size))
            idx = index[sel]
            if idx.min() < 0 or idx.max() >= shape[0]:
                raise MRCError("%s: image %d requested but the stack holds %d"
                               % (self._paths[str(name)], int(idx.max()) + 1, shape[0]))
            order = np.argsort(idx, kind="stable")
            sorted_idx, targets = idx[order], sel[order]
            # Runs of consecutive indices: one positioned read each.
            breaks = np.nonzero(np.diff(sorted_idx) != 1)[0] + 1
            for run_idx, run_targets in zip(np.split(sorted_idx, breaks), np.split(targets, breaks)):
                block = self._read_run(fd, offset, dtype, shape, int(run_idx[0]), len(run_idx))
                out[run_targets] = block
        if not np.all(np.isfinite(out)):
            bad = positions[~np.isfinite(out).all(axis=(1, 2))][0]
            raise MRCError("particle %d (%s@%s) contains NaN or infinite values"
                           % (bad, self.table.image_index[bad] + 1, self.table.image_file[bad]))
        return out

    def batches(self, batch_size, positions=None):
        """Yield ``(positions, images)`` over the table (or the given positions)."""
        positions = np.arange(len(self)) if positions is None else np.asarray(positions)
        for start in range(0, len(positions), batch_size):
            pos = positions[start:start + batch_size]
            yield pos, self.read(pos)

    def close(self):
        for fd, *_ in self._handles.values():
            os.close(fd)
        self._handles = {}

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()
