"""Sub-voxels: the cubes of ``box`` voxels around chosen voxels of a prepared map, in batches.

Centre of an even box.  The sub-voxel of voxel ``c = (z, y, x)`` is
``V[z - h : z - h + box, y - h : ..., x - h : ...]`` with ``h = box // 2``: voxel ``c`` sits at
index ``(h, h, h)`` of the sub-voxel.  For the network's box of 10 that is index 5, with five
voxels before it and four after it on every axis (the original's ``V[c - 5 : c + 5]``).
Outside the map the sub-voxel holds zeros (the value of solvent after standardisation and
clamping), so voxels near the edge of the box are predicted too.

Extraction is a gather from the zero-padded map with precomputed flat offsets: a batch of
``N`` sub-voxels costs ``N * box^3`` values on the device, never all sub-voxels of the map.
"""
import numpy as np
import torch

from ..core.fingerprint import digest

__all__ = ["BOX", "SubvoxelSource", "box_offsets", "rotate_subvoxels", "ROTATIONS"]

BOX = 10

# The ten orientations of the augmentation: identity, then 90, 180 and 270 degrees about the
# x, y and z axes.  Tensors are (N, z, y, x): about x turns the (z, y) plane, about y the
# (z, x) plane, about z the (y, x) plane.
ROTATIONS = [(0, (1, 2))] + [(k, dims) for dims in ((1, 2), (1, 3), (2, 3)) for k in (1, 2, 3)]


def box_offsets(box, strides):
    """Flat offsets ``(box^3,)`` of a sub-voxel's voxels from its centre voxel, C order (z, y, x)."""
    rel = np.arange(box) - box // 2
    dz, dy, dx = np.meshgrid(rel, rel, rel, indexing="ij")
    return (dz * strides[0] + dy * strides[1] + dx * strides[2]).reshape(-1)


class SubvoxelSource:
    """A prepared map, zero-padded once on the device, from which sub-voxels are gathered."""

    def __init__(self, values, box=BOX, device=None):
        values = torch.as_tensor(values, dtype=torch.float32)
        if device is not None:
            values = values.to(device)
        self.shape = tuple(values.shape)
        self.box = box
        self.device = values.device
        pad = box // 2  # enough on both sides: offsets run from -box//2 to box - 1 - box//2
        self.pad = pad
        padded = torch.nn.functional.pad(values[None, None], (pad,) * 6)[0, 0]
        self.padded_shape = tuple(padded.shape)
        self._flat = padded.reshape(-1)
        strides = (self.padded_shape[1] * self.padded_shape[2], self.padded_shape[2], 1)
        self._strides = torch.tensor(strides, dtype=torch.int64, device=self.device)
        self._offsets = torch.as_tensor(box_offsets(box, strides), device=self.device)

    def digest(self):
        """A digest of the map the sub-voxels come from (for training fingerprints)."""
        return digest([list(self.shape), self._flat])

    def extract(self, centres_zyx):
        """Sub-voxels ``(N, box, box, box)`` around integer (z, y, x) centres ``(N, 3)`` inside the map."""
        centres = torch.as_tensor(centres_zyx, dtype=torch.int64, device=self.device)
        flat_centre = ((centres + self.pad) * self._strides).sum(-1)
        index = flat_centre[:, None] + self._offsets[None, :]
        return self._flat[index].reshape(-1, self.box, self.box, self.box)

    def batches(self, centres_zyx, batch_size):
        """Yield ``(start, stop, subvoxels)`` over ``centres_zyx`` in batches of ``batch_size``."""
        n = len(centres_zyx)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            yield start, stop, self.extract(centres_zyx[start:stop])


def rotate_subvoxels(larger, choices, box=BOX):
    """Rotated sub-voxels ``(N, box, box, box)`` from odd boxes ``larger`` ``(N, box+1, ...)``.

    ``choices`` ``(N,)`` indexes :data:`ROTATIONS`.  A cube of ``box + 1`` voxels (odd) turned by
    ``torch.rot90`` rotates about its middle voxel, which is the labelled voxel; cutting
    ``[:box]`` on every axis then puts that voxel back at index ``box // 2``.  So each augmented
    sample is exactly the sub-voxel of the same voxel in a copy of the map rotated about that
    voxel, and keeps the voxel's label (an even box turned as it is would move its centre).
    """
    if larger.shape[-1] != box + 1:
        raise ValueError("rotation needs boxes of %d voxels, got %d" % (box + 1, larger.shape[-1]))
    out = torch.empty(larger.shape[0], box, box, box, dtype=larger.dtype, device=larger.device)
    choices = torch.as_tensor(choices, device=larger.device)
    for c, (k, dims) in enumerate(ROTATIONS):
        sel = torch.nonzero(choices == c).reshape(-1)
        if len(sel):
            out[sel] = torch.rot90(larger[sel], k, dims)[:, :box, :box, :box]
    return out
