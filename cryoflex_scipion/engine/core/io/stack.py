"""Stream particle images from their stacks in batches (memory-mapped, never all in RAM)."""
import numpy as np

from .mrc import MRCError, open_stack

__all__ = ["ImageSource"]


class ImageSource:
    """Read the images of a :class:`ParticleTable` by position, in batches.

    Stacks are memory-mapped once and kept open; a batch reads only the
    requested images (sorted per stack for sequential disk access) and
    returns float32 ``(n, D, D)`` in the order asked for.
    """

    def __init__(self, table, data_root=None):
        self.table = table
        self._paths = table.resolved_files(data_root)
        self._handles = {}
        self.size = int(table.box[0]) if len(table) else 0

    def __len__(self):
        return len(self.table)

    def _stack(self, name):
        handle = self._handles.get(name)
        if handle is None:
            handle, info = open_stack(self._paths[name])
            if info.shape[-1] != info.shape[-2]:
                handle.close()
                raise MRCError("%s: images are %dx%d; square images are required"
                               % (self._paths[name], info.shape[-1], info.shape[-2]))
            self._handles[name] = handle
        return handle

    def read(self, positions):
        """Images at ``positions`` (indices into the table)."""
        positions = np.asarray(positions, dtype=np.int64)
        out = np.empty((len(positions), self.size, self.size), dtype=np.float32)
        files = np.asarray(self.table.image_file)[positions]
        index = np.asarray(self.table.image_index)[positions]
        for name in np.unique(files):
            sel = np.nonzero(files == name)[0]
            data = self._stack(str(name)).data
            if data.ndim == 2:
                data = data[None]
            if data.shape[-1] != self.size:
                raise MRCError("%s: images are %d px but the particles declare %d px"
                               % (self._paths[str(name)], data.shape[-1], self.size))
            idx = index[sel]
            if idx.min() < 0 or idx.max() >= data.shape[0]:
                raise MRCError("%s: image %d requested but the stack holds %d"
                               % (self._paths[str(name)], int(idx.max()) + 1, data.shape[0]))
            order = np.argsort(idx, kind="stable")
            out[sel[order]] = data[idx[order]]
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
        for h in self._handles.values():
            h.close()
        self._handles = {}

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()
