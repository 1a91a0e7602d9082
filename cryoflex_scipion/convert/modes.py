"""SetOfNormalModes -> arrays (modes x atoms x 3).

Mode files follow ContinuousFlex / scipion-em-prody (``modes/vec.N``: one
line ``dx dy dz`` per atom), the layout ``prody.parseScipionModes`` reads.
"""
import os

import numpy as np

__all__ = ["read_mode_file", "modes_to_array", "fill_normal_modes"]


def read_mode_file(path):
    vec = np.loadtxt(path, dtype=np.float64, ndmin=2)
    if vec.shape[1] != 3:
        raise ValueError("%s: expected 3 columns (dx dy dz per atom), found %d" % (path, vec.shape[1]))
    return vec


def modes_to_array(modes, enabled_only=True, numbers=None):
    """``(array (M, A, 3), mode numbers)`` of a SetOfNormalModes.

    ``numbers`` (1-based, as in the set) picks modes explicitly; otherwise the
    enabled ones (or all with ``enabled_only=False``).
    """
    vecs, picked = [], []
    for i, mode in enumerate(modes.iterItems(orderBy="id")):
        number = mode.getObjId() or i + 1
        if numbers is not None:
            if number not in numbers:
                continue
        elif enabled_only and not mode.isEnabled():
            continue
        vecs.append(read_mode_file(mode.getModeFile()))
        picked.append(number)
    if numbers is not None and set(numbers) - set(picked):
        raise ValueError("modes %s are not in the set" % sorted(set(numbers) - set(picked)))
    if not vecs:
        raise ValueError("no normal mode selected")
    sizes = {v.shape[0] for v in vecs}
    if len(sizes) != 1:
        raise ValueError("mode files have different numbers of atoms: %s" % sorted(sizes))
    return np.stack(vecs), picked


def fill_normal_modes(mode_set, vectors, eigenvalues, collectivity, score, enabled, folder):
    """Write ``folder/vec.N`` files and append one NormalMode per mode to ``mode_set``.

    Items carry ``_modeFile`` (the path as given, e.g. ``Runs/<run>/modes/vec.7``),
    ``_collectivity``, ``_score`` and ``_eigenval`` in that order: the columns
    ``prody.parseScipionModes`` reads.  Vectors are written with 13 significant
    digits so the files reproduce the engine's modes.
    """
    from pwem.objects import NormalMode
    from pyworkflow.object import Float
    os.makedirs(folder, exist_ok=True)
    for k in range(len(vectors)):
        fn = os.path.join(folder, "vec.%d" % (k + 1))
        np.savetxt(fn, np.asarray(vectors[k]).reshape(-1, 3), fmt="%.12e")
        mode = NormalMode(modeFile=fn, collectivity=float(collectivity[k]), score=float(score[k]))
        mode._eigenval = Float(float(eigenvalues[k]))
        mode.setObjId(k + 1)
        mode.setEnabled(bool(enabled[k]))
        mode_set.append(mode)
    return mode_set
