"""Conformational trajectories as arrays: heavy atoms matched to a reference model, and the AdK
LID-NMP distance.

A trajectory is an ``.npz`` with ``coords`` (frames x atoms x 3, A) and, optionally, ``names``
(atom names, one per atom), ``resids`` and a per-frame ``lid_nmp_A``
(``../shared/data/adk/adk_dims_frames.npz`` is one).  The reference model (``.pdb``/``.cif`` read
with ProDy, or an engine ``.npz``) gives the elements (hence the weights, electrons) and the atom
order; hydrogens are dropped by atom name (CHARMM/PDB names starting with H, after any digits).
"""
from dataclasses import dataclass

import numpy as np

from ..core.atoms import AtomModel, read_atoms
from ..core.runtime import EngineInputError

__all__ = ["Trajectory", "is_hydrogen", "load_trajectory", "lid_nmp_distance", "LID_RESIDUES", "NMP_RESIDUES"]

LID_RESIDUES = (122, 159)   # AdK LID domain (inclusive)
NMP_RESIDUES = (30, 59)     # AdK NMP-binding domain (inclusive)


@dataclass
class Trajectory:
    coords: np.ndarray        # (K, A, 3) float64, heavy atoms, A
    reference: AtomModel      # heavy atoms of the reference model, same order
    lid_nmp: np.ndarray       # (K,) A, LID-NMP distance per frame (NaN when unknown)
    source: str = ""

    def __len__(self):
        return len(self.coords)

    @property
    def n_atoms(self):
        return self.coords.shape[1]


def is_hydrogen(names):
    """Hydrogen mask from atom names (``H``, ``HA``, ``1HB``, ``HT1`` ...)."""
    return np.array([str(n).strip().lstrip("0123456789").upper().startswith("H") for n in names], dtype=bool)


def lid_nmp_distance(coords, names, resids):
    """Distance (A) between the C-alpha centres of mass of AdK's LID (res 122-159) and NMP (res 30-59)
    domains, per frame of ``coords`` ``(K, A, 3)`` (or one ``(A, 3)``); NaN if those residues are absent."""
    coords = np.asarray(coords, dtype=np.float64)
    ca = np.char.strip(np.asarray(names).astype(str)) == "CA"
    resids = np.asarray(resids)
    lid = ca & (resids >= LID_RESIDUES[0]) & (resids <= LID_RESIDUES[1])
    nmp = ca & (resids >= NMP_RESIDUES[0]) & (resids <= NMP_RESIDUES[1])
    if not lid.any() or not nmp.any():
        return np.full(coords.shape[:-2], np.nan) if coords.ndim == 3 else float("nan")
    d = np.linalg.norm(coords[..., lid, :].mean(-2) - coords[..., nmp, :].mean(-2), axis=-1)
    return d if coords.ndim == 3 else float(d)


def _first_difference(a, b):
    a = np.char.strip(np.asarray(a).astype(str))
    b = np.char.strip(np.asarray(b).astype(str))
    diff = np.nonzero(a != b)[0]
    return None if len(diff) == 0 else (int(diff[0]), a[diff[0]], b[diff[0]], len(diff))


def load_trajectory(path, reference_path):
    """Read a trajectory ``.npz`` and its reference model, keep the heavy atoms of both, check that
    they are the same atoms in the same order -> :class:`Trajectory` (raises :class:`EngineInputError`)."""
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise EngineInputError("trajectory not found: %s" % path) from None
    except (OSError, ValueError) as exc:
        raise EngineInputError("%s: not a readable .npz trajectory (%s)" % (path, exc)) from None
    with data:
        if "coords" not in data:
            raise EngineInputError("%s: no 'coords' array (frames x atoms x 3) in the trajectory" % path)
        coords = np.asarray(data["coords"], dtype=np.float64)
        names = data["names"] if "names" in data else None
        stored_distance = np.asarray(data["lid_nmp_A"], dtype=np.float64) if "lid_nmp_A" in data else None
    if coords.ndim != 3 or coords.shape[-1] != 3 or coords.shape[0] == 0 or coords.shape[1] == 0:
        raise EngineInputError("%s: 'coords' has shape %s; expected (frames, atoms, 3)" % (path, coords.shape))
    if not np.all(np.isfinite(coords)):
        raise EngineInputError("%s: the trajectory has NaN or infinite coordinates" % path)
    if names is not None and len(names) != coords.shape[1]:
        raise EngineInputError("%s: %d atom names for %d atoms per frame" % (path, len(names), coords.shape[1]))
    try:
        ref = read_atoms(reference_path, None)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        raise EngineInputError(str(exc)) from None
    ref_heavy = ~is_hydrogen(ref.names)
    n_ref, n_heavy = len(ref), int(ref_heavy.sum())
    if coords.shape[1] == n_ref:
        expected, keep = ref.names, ref_heavy          # full trajectory (with hydrogens)
    elif coords.shape[1] == n_heavy:
        expected, keep = ref.names[ref_heavy], None    # heavy atoms already
    else:
        raise EngineInputError("%s has %d atoms per frame but the reference %s has %d (%d heavy): they must be "
                               "the same atoms in the same order" % (path, coords.shape[1], reference_path, n_ref,
                                                                    n_heavy))
    if names is not None:
        diff = _first_difference(names, expected)
        if diff is not None:
            raise EngineInputError("%s and %s do not list the same atoms: atom %d is %r in the trajectory and %r in "
                                   "the reference (%d names differ)" % (path, reference_path, diff[0] + 1, diff[1],
                                                                      diff[2], diff[3]))
    if keep is not None:
        coords = coords[:, keep]
    reference = ref.select(ref_heavy)
    if stored_distance is not None and stored_distance.shape == (len(coords),):
        distance = stored_distance
    else:
        distance = lid_nmp_distance(coords, reference.names, reference.resids)
    return Trajectory(coords=coords, reference=reference, lid_nmp=np.asarray(distance, dtype=np.float64),
                      source=str(path))
