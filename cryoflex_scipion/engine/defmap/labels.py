"""Training labels: per-atom RMSF (from an MD trajectory or from B-factors) and per-voxel log10 RMSF.

Per atom:
- :func:`trajectory_rmsf`: frames superposed on the C-alpha atoms (Kabsch, twice: on the first
  frame, then on the mean structure of that first pass), RMSF about the mean position,
  ``sqrt(mean_t |x_t - <x>|^2)`` (3D, A).
- :func:`bfactor_rmsf`: isotropic B = 8 pi^2 <u_x^2> (one axis), so the 3D RMSF is
  ``sqrt(3 B / (8 pi^2))``.

Per voxel (:func:`voxel_labels`): the label of a voxel is the log10 RMSF of the atom nearest
to the voxel centre (scipy cKDTree).  Which voxels get a label:
- ``max_distance=None`` (default, the original's rule): the voxels that contain an atom, i.e.
  the nearest voxel of at least one atom; the label is still that of the atom nearest to the
  centre, which may be a neighbour voxel's atom;
- ``max_distance=d``: every voxel whose centre lies within ``d`` A of an atom.
Atoms without a positive RMSF (B-factor 0, placeholder values) take no part.
"""
import numpy as np
from scipy.spatial import cKDTree

from ..core.metrics import kabsch

__all__ = ["bfactor_rmsf", "rmsf_bfactor", "trajectory_rmsf", "voxel_labels", "heavy_atoms", "ca_atoms"]


def bfactor_rmsf(bfactors):
    """3D RMSF (A) of isotropic B-factors (A^2): ``sqrt(3 B / (8 pi^2))``; NaN where B <= 0."""
    b = np.asarray(bfactors, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.where(b > 0, np.sqrt(3.0 * np.clip(b, 0, None) / (8.0 * np.pi ** 2)), np.nan)


def rmsf_bfactor(rmsf):
    """Inverse of :func:`bfactor_rmsf`: ``B = 8 pi^2 RMSF^2 / 3``."""
    return 8.0 * np.pi ** 2 * np.asarray(rmsf, dtype=np.float64) ** 2 / 3.0


def heavy_atoms(model):
    return np.char.upper(np.char.strip(np.asarray(model.elements).astype(str))) != "H"


def ca_atoms(model):
    return np.char.strip(np.asarray(model.names).astype(str)) == "CA"


def _superpose(frames, target, mask):
    out = np.empty_like(frames)
    for t, frame in enumerate(frames):
        rot, shift = kabsch(frame[mask], target[mask])
        out[t] = frame @ rot.T + shift
    return out


def trajectory_rmsf(frames, align_mask=None):
    """Per-atom RMSF (A) of a trajectory ``(T, A, 3)`` after superposition on ``align_mask`` atoms.

    ``align_mask`` selects the atoms to superpose on (the C-alpha atoms, :func:`ca_atoms`);
    all atoms when None.  Select heavy atoms on the result for heavy-atom labels.
    """
    frames = np.asarray(frames, dtype=np.float64)
    if frames.ndim != 3 or frames.shape[-1] != 3 or len(frames) < 2:
        raise ValueError("a trajectory (frames, atoms, 3) with at least 2 frames is needed, got %s"
                         % (frames.shape,))
    mask = np.ones(frames.shape[1], bool) if align_mask is None else np.asarray(align_mask, bool)
    if mask.sum() < 3:
        raise ValueError("superposition needs at least 3 atoms, %d selected" % mask.sum())
    aligned = _superpose(frames, frames[0], mask)
    aligned = _superpose(aligned, aligned.mean(0), mask)
    return np.sqrt(((aligned - aligned.mean(0)) ** 2).sum(-1).mean(0))


def voxel_labels(grid, coords, rmsf, max_distance=None):
    """Labelled voxels of ``grid``: ``(index (N, 3) int64 z, y, x; log10 RMSF (N,) float32; atom (N,))``.

    ``coords`` (A, 3) are x, y, z in A in the map's frame; ``rmsf`` (A,) in A.  See the module
    docstring for the rule.  ``atom`` is the index of the atom that gave each label.
    """
    coords = np.asarray(coords, dtype=np.float64)
    rmsf = np.asarray(rmsf, dtype=np.float64)
    good = np.isfinite(rmsf) & (rmsf > 0)
    atoms = np.nonzero(good)[0]
    if len(atoms) == 0:
        raise ValueError("no atom has a positive RMSF (B-factors all zero?)")
    tree = cKDTree(coords[atoms])
    if max_distance is None:
        candidates = grid.nearest_index(coords[atoms])
    else:
        reach = int(np.ceil(max_distance / grid.apix))
        rel = np.arange(-reach, reach + 1)
        steps = np.stack(np.meshgrid(rel, rel, rel, indexing="ij"), -1).reshape(-1, 3)
        near = np.floor(grid.xyz_to_index(coords[atoms])).astype(np.int64)
        candidates = (near[:, None, :] + steps[None]).reshape(-1, 3)
    candidates = candidates[grid.contains(candidates)]
    candidates = np.unique(candidates, axis=0)
    dist, nearest = tree.query(grid.index_to_xyz(candidates))
    if max_distance is not None:
        keep = dist <= max_distance
        candidates, nearest = candidates[keep], nearest[keep]
    atom = atoms[nearest]
    return candidates.astype(np.int64), np.log10(rmsf[atom]).astype(np.float32), atom
