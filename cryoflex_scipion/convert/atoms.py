"""AtomStruct / SetOfAtomStructs -> engine arrays (.npz / .npy), read with ProDy on the CPU side."""
import numpy as np

from ..engine.core.atoms import read_atoms

__all__ = ["atomstruct_file", "atomstruct_to_npz", "atomstructs_to_frames"]


def atomstruct_file(atom_struct):
    return atom_struct.getFileName()


def atomstruct_to_npz(atom_struct, path, selection="all"):
    """Write the selected atoms of an AtomStruct as the engine's .npz; returns the AtomModel."""
    model = read_atoms(atomstruct_file(atom_struct), selection)
    model.save(path)
    return model


def atomstructs_to_frames(atom_structs, path, selection="all", reference=None):
    """Coordinates of every structure in a SetOfAtomStructs, stacked ``(K, A, 3)`` into a .npy.

    All structures must contain the same selected atoms (in number and
    names); with ``reference`` (an AtomModel) they must match it.
    """
    frames, names = [], None
    for item in atom_structs.iterItems(orderBy="id"):
        model = read_atoms(item.getFileName(), selection)
        key = (model.names.tolist(), model.resids.tolist())
        if names is None:
            names = key
        elif key != names:
            raise ValueError("%s: its selected atoms differ from the first structure's" % item.getFileName())
        frames.append(model.coords)
    if not frames:
        raise ValueError("the set of atomic structures is empty")
    stack = np.stack(frames)
    if reference is not None and stack.shape[1] != len(reference):
        raise ValueError("structures have %d selected atoms but the reference has %d"
                         % (stack.shape[1], len(reference)))
    np.save(path, stack)
    return stack
