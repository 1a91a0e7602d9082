"""Atomic models as arrays, and their normal-mode deformation.

The engine never parses PDB/mmCIF on a GPU node: the CPU side (ProDy, through
:func:`read_atoms`) writes an ``.npz`` with the arrays below, which is all
the engine needs.  ProDy is imported only when a PDB/mmCIF file is read.
"""
import os
from dataclasses import MISSING, dataclass, fields

import numpy as np

from .errors import EngineInputError

__all__ = ["AtomModel", "read_atoms", "electrons", "deform"]

# Electrons per element: the weight of an atom's Gaussian in simulated maps and images.
_ELECTRONS = {"H": 1, "C": 6, "N": 7, "O": 8, "P": 15, "S": 16, "SE": 34, "MG": 12, "ZN": 30,
              "FE": 26, "CA": 20, "NA": 11, "CL": 17, "K": 19, "MN": 25}


def electrons(elements):
    """Number of electrons of each element symbol (carbon for unknown symbols)."""
    return np.array([_ELECTRONS.get(str(e).strip().upper(), 6) for e in elements], dtype=np.float64)


@dataclass
class AtomModel:
    coords: np.ndarray        # (A, 3) float64, A, model frame
    elements: np.ndarray      # (A,) str
    names: np.ndarray         # (A,) str, atom names (CA, N, ...)
    resnames: np.ndarray      # (A,) str
    resids: np.ndarray        # (A,) int
    chains: np.ndarray        # (A,) str
    bfactors: np.ndarray      # (A,) float
    weights: np.ndarray = None  # (A,) float; electrons by default

    def __post_init__(self):
        self.coords = np.asarray(self.coords, dtype=np.float64).reshape(-1, 3)
        if self.weights is None:
            self.weights = electrons(self.elements)
        if len(self.coords) == 0:
            raise ValueError("the atomic model has no atoms")
        if not np.all(np.isfinite(self.coords)):
            raise ValueError("the atomic model has NaN or infinite coordinates")

    def __len__(self):
        return len(self.coords)

    def center(self):
        """Weighted centre of mass (A)."""
        return (self.coords * self.weights[:, None]).sum(0) / self.weights.sum()

    def select(self, mask):
        mask = np.asarray(mask)
        return AtomModel(**{f.name: getattr(self, f.name)[mask] for f in fields(self)})

    def save(self, path):
        np.savez(path, **{f.name: getattr(self, f.name) for f in fields(self)})


def _from_prody(atoms):
    elements = atoms.getElements()
    names = atoms.getNames()
    if elements is None or any(not e for e in elements):
        # Element column missing in some PDB files: first letter of the atom name.
        elements = np.array([n.strip()[0] if n.strip() else "C" for n in names])
    return AtomModel(coords=atoms.getCoords(), elements=np.asarray(elements).astype(str),
                     names=np.asarray(names).astype(str), resnames=np.asarray(atoms.getResnames()).astype(str),
                     resids=np.asarray(atoms.getResnums()).astype(np.int64),
                     chains=np.asarray(atoms.getChids()).astype(str),
                     bfactors=np.asarray(atoms.getBetas(), dtype=np.float64))


def read_atoms(path, selection=None):
    """Read ``.npz`` (engine arrays) or ``.pdb``/``.cif`` (through ProDy) into an :class:`AtomModel`.

    ``selection`` is a ProDy selection string (e.g. ``"protein and not hydrogen"``);
    for ``.npz`` input only ``None``, ``"all"``, ``"ca"`` and ``"heavy"`` are understood.
    """
    if not os.path.exists(path):
        raise FileNotFoundError("atomic model not found: %s" % path)
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as data:
            needed = [f.name for f in fields(AtomModel) if f.default is MISSING and f.default_factory is MISSING]
            missing = [name for name in needed if name not in data]
            if missing:
                raise EngineInputError("%s is not an engine atom model: it lacks %s (write one with the atoms "
                                       "command)" % (path, ", ".join(missing)))
            model = AtomModel(**{f.name: data[f.name] for f in fields(AtomModel) if f.name in data})
        if not np.all(np.isfinite(model.coords)):
            raise EngineInputError("%s: %d atoms have NaN or infinite coordinates"
                                   % (path, int((~np.isfinite(model.coords)).any(1).sum())))
        if selection in (None, "all"):
            return model
        if selection == "ca":
            return model.select(model.names == "CA")
        if selection == "heavy":
            return model.select(np.char.upper(model.elements) != "H")
        raise EngineInputError("selection %r needs a PDB/mmCIF input" % selection)
    try:
        import prody
    except ImportError as exc:
        raise ImportError("reading %s needs ProDy; convert it to .npz on a machine with ProDy "
                          "(python -m cryoflex_scipion.engine atoms --help)" % path) from exc
    prody.confProDy(verbosity="none")
    try:
        structure = prody.parseMMCIF(path) if path.lower().endswith((".cif", ".mmcif")) else prody.parsePDB(path)
    except Exception as exc:  # ProDy raises ValueError, IndexError... on files that are not structures
        raise EngineInputError("%s: not a readable PDB/mmCIF file (%s)" % (path, str(exc).splitlines()[0])) from None
    if structure is None:
        raise EngineInputError("%s: no atoms could be read" % path)
    if selection not in (None, "all"):
        try:
            structure = structure.select(selection)
        except Exception as exc:  # prody.atomic.select.SelectionError and friends
            raise EngineInputError("%s: invalid selection %r (%s)" % (path, selection,
                                                                     " ".join(str(exc).split())[:120])) from None
        if structure is None:
            raise EngineInputError("%s: selection %r matches no atom" % (path, selection))
    return _from_prody(structure)


def deform(coords, modes, amplitudes):
    """Structure(s) deformed along normal modes.

    ``coords (A, 3)``, ``modes (M, A, 3)`` (unit norm over all 3A coordinates,
    the HEMNMA convention), ``amplitudes (..., M)`` -> ``(..., A, 3)``:
    ``coords + sum_k amplitudes_k * modes_k``.  Works with numpy or torch.
    """
    if hasattr(amplitudes, "dim"):  # torch
        import torch
        return coords + torch.einsum("...m,mai->...ai", amplitudes, modes)
    return coords + np.einsum("...m,mai->...ai", amplitudes, modes)
