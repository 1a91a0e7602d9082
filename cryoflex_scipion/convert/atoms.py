"""AtomStruct / SetOfAtomStructs -> engine arrays (.npz / .npy), read with ProDy on the CPU side."""
import numpy as np

from ..engine.core.atoms import read_atoms

__all__ = ["atomstruct_file", "atomstruct_to_npz", "atomstructs_to_frames", "trajectory_to_frames", "light_atoms"]


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


def trajectory_to_frames(structure_path, trajectory_path, selection, path):
    """MD frames of the ``selection`` atoms of a model file, ``(frames, atoms, 3)`` into a .npy.

    A ``.dcd`` holds every atom of the model file in its order (read with ProDy); a ``.npy`` must
    already hold the selected atoms.  Raises ValueError when the atom counts disagree.
    """
    n_selected = len(read_atoms(structure_path, selection))
    if trajectory_path.endswith(".npy"):
        frames = np.load(trajectory_path)
    else:
        import prody
        prody.confProDy(verbosity="none")
        structure = prody.parsePDB(structure_path) if not structure_path.lower().endswith((".cif", ".mmcif")) \
            else prody.parseMMCIF(structure_path)
        frames = prody.parseDCD(trajectory_path).getCoordsets()
        if frames.shape[1] != structure.numAtoms():
            raise ValueError("%s has %d atoms per frame but %s has %d" % (trajectory_path, frames.shape[1],
                                                                        structure_path, structure.numAtoms()))
        frames = frames[:, structure.select(selection).getIndices()]
    if frames.ndim != 3 or frames.shape[1:] != (n_selected, 3):
        raise ValueError("%s: frames of shape %s, expected (frames, %d, 3) for the %r atoms of %s"
                         % (trajectory_path, frames.shape, n_selected, selection, structure_path))
    np.save(path, np.asarray(frames, dtype=np.float32))
    return frames.shape


_BACKBONE = {"N", "CA", "C", "O"}


def light_atoms(path, selection="all"):
    """(names, elements, coords) of a PDB or mmCIF file without ProDy, for form validation.

    The Scipion GUI runs Python with -O, where ProDy 2.6 cannot be imported, so protocols'
    ``_validate`` uses this reader.  ``selection``: "all", "name CA", "backbone", "not hydrogen";
    anything else returns None (the protocol checks it when it runs).
    """
    names, elements, coords = [], [], []
    if path.lower().endswith((".cif", ".mmcif")):
        columns, in_loop = [], False
        with open(path) as fh:
            for line in fh:
                if line.startswith("_atom_site."):
                    columns.append(line.split(".", 1)[1].strip())
                    in_loop = True
                elif in_loop and line.startswith(("ATOM", "HETATM")):
                    tok = line.split()
                    row = dict(zip(columns, tok))
                    names.append(row.get("label_atom_id", row.get("auth_atom_id", "")).strip('"'))
                    elements.append(row.get("type_symbol", names[-1][:1]))
                    coords.append([float(row["Cartn_x"]), float(row["Cartn_y"]), float(row["Cartn_z"])])
                elif in_loop and columns and not line.startswith(("_atom_site.", "ATOM", "HETATM")) and coords:
                    break
    else:
        with open(path) as fh:
            for line in fh:
                if line.startswith(("ATOM", "HETATM")):
                    name = line[12:16].strip()
                    names.append(name)
                    element = line[76:78].strip() if len(line) >= 78 else ""
                    elements.append(element or name[:1])
                    coords.append([float(line[30:38]), float(line[38:46]), float(line[46:54])])
    names, elements = np.array(names), np.char.upper(np.array(elements, dtype=str))
    coords = np.array(coords, dtype=np.float64).reshape(-1, 3)
    keep = {"all": np.ones(len(names), bool), "name CA": names == "CA",
            "backbone": np.isin(names, list(_BACKBONE)), "not hydrogen": elements != "H"}.get(selection)
    if keep is None:
        return None
    return names[keep], elements[keep], coords[keep]
