"""Rigidity prior on the deformation: distortion of small tetrahedra carried by the flow.

Each particle (a voxel of the initial map at the current level) is the
corner of a voxel-sized cube whose other corners are neighbouring particles
or extra massless points; the cube is cut into 6 tetrahedra along its main
diagonal (Kuhn triangulation).  The flow moves all corners; for a
tetrahedron with edge vectors ``E0`` (rows) before and ``E1`` after,
``A = E0^-1 E1`` is the linear map of the deformation on it, and the energy

    sum_i (sigma_i(A)^2 - 1)^2 = || A^T A - I ||_F^2

vanishes exactly for rotations.  The Frobenius form equals the CryoTRANS
singular-value form (the sigma_i^2 are the eigenvalues of ``A^T A``) but needs
no SVD, whose gradient is undefined at the identity where every flow starts.
"""
import itertools

import numpy as np
import torch

__all__ = ["TetraMesh", "build_mesh"]

_CORNERS = np.array([(dz, dy, dx) for dz in (0, 1) for dy in (0, 1) for dx in (0, 1)])  # z, y, x offsets


def _kuhn_tetrahedra():
    """Six tetrahedra of the unit cube as corner numbers (4 * dz + 2 * dy + dx)."""
    tets = []
    for perm in itertools.permutations(range(3)):  # axes in x, y, z numbering
        corner = np.zeros(3, dtype=int)  # x, y, z
        path = [corner.copy()]
        for axis in perm:
            corner[axis] = 1
            path.append(corner.copy())  # 000, e_a, e_a + e_b, 111
        tets.append([4 * p[2] + 2 * p[1] + p[0] for p in path])
    return np.array(tets)


class TetraMesh:
    """Tetrahedra over a set of points (indices into the flow's position array)."""

    def __init__(self, tets, inverse_edges, weights):
        self.tets = tets                    # (T, 4) long
        self.inverse_edges = inverse_edges  # (T, 3, 3) or (6, 3, 3) with tet types
        self.weights = weights              # (T,) per-tetrahedron weight (rigidity weight of its part)

    def to(self, device, dtype):
        return TetraMesh(self.tets.to(device), self.inverse_edges.to(device, dtype), self.weights.to(device, dtype))

    def __len__(self):
        return len(self.tets)

    def energy(self, positions):
        """Weighted mean over tetrahedra of ``|| A^T A - I ||_F^2`` for the moved ``positions``."""
        p = positions[self.tets]                      # (T, 4, 3)
        edges = (p[:, 1:] - p[:, :1]).reshape(-1, 6, 3, 3)  # rows; 6 tetrahedron types per cube
        a = self.inverse_edges @ edges                # (cubes, 6, 3, 3)
        ata = a.transpose(-1, -2) @ a
        eye = torch.eye(3, dtype=a.dtype, device=a.device)
        per_tet = ((ata - eye) ** 2).sum(dim=(-1, -2)).reshape(-1)
        return (per_tet * self.weights).sum() / len(self.tets)


def build_mesh(index_zyx, level, labels=None, part_weights=None):
    """Mesh of the cubes at the particles ``index_zyx (P, 3)`` of ``level``.

    Returns ``(extra_index (E, 3), extra_labels (E,), mesh)``: the corners
    that are not particles (they must be moved with the particles, with zero
    mass; they take the part of the cube that first needs them) and the mesh
    whose tetrahedra index ``particles + extras`` in that order.  Tetrahedra
    are ordered as 6 consecutive types per cube.
    """
    idx = np.asarray(index_zyx, dtype=np.int64)
    n_particles = len(idx)
    side = level.m + 1
    key = lambda a: (a[..., 0] * side + a[..., 1]) * side + a[..., 2]  # noqa: E731
    particle_keys = key(idx)
    corners = idx[:, None, :] + _CORNERS[None]              # (P, 8, 3)
    corner_keys = key(corners)                               # (P, 8)
    # Number every distinct corner: particles first (in their order), then the extra points.
    flat = corner_keys.ravel()
    missing = ~np.isin(flat, particle_keys)
    extra_keys, first = np.unique(flat[missing], return_index=True)
    first_cube = np.nonzero(missing)[0][first] // 8
    all_keys = np.concatenate([particle_keys, extra_keys])
    order = np.argsort(all_keys, kind="stable")
    corner_ids = order[np.searchsorted(all_keys[order], corner_keys)]
    kuhn = _kuhn_tetrahedra()
    tets = corner_ids[:, kuhn].reshape(-1, 4)                # (6P, 4)
    extra_index = np.stack([extra_keys // (side * side), (extra_keys // side) % side, extra_keys % side], -1)
    h = level.factor / level.size                            # cube edge in box units
    xyz = np.stack([_CORNERS[:, 2], _CORNERS[:, 1], _CORNERS[:, 0]], -1).astype(np.float64) * h
    e0 = np.stack([xyz[t[1:]] - xyz[t[0]] for t in kuhn])    # (6, 3, 3)
    inverse = torch.as_tensor(np.linalg.inv(e0))
    if labels is None:
        extra_labels = np.zeros(len(extra_keys), dtype=np.int64)
        weights = torch.ones(len(tets), dtype=torch.float64)
    else:
        labels = np.asarray(labels, dtype=np.int64)
        extra_labels = labels[first_cube]
        pw = np.ones(int(labels.max()) + 1) if part_weights is None else np.asarray(part_weights, np.float64)
        weights = torch.as_tensor(np.repeat(pw[labels], 6))
    return extra_index, extra_labels, TetraMesh(torch.as_tensor(tets), inverse, weights)
