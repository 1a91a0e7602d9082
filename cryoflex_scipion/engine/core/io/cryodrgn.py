"""cryoDRGN pose files (``(rotations, translations)`` pickles).

cryoDRGN's rotation matrices are RELION's ``A`` of :mod:`..geometry`
(``R_from_relion``), and its translations are the RELION origin in units of
the box: ``trans = rlnOrigin(px) / D``.  Checked on cryoDRGN's own test
projections in ``tests/engine/test_conventions.py``.
"""
import pickle

import numpy as np

from ..geometry import euler_to_matrix, matrix_to_euler

__all__ = ["read_cryodrgn_poses", "cryodrgn_to_relion", "relion_to_cryodrgn"]


def read_cryodrgn_poses(path):
    """``(rotations (N, 3, 3), translations (N, 2) or None)`` from a cryoDRGN .pkl (or .npz)."""
    if path.endswith(".npz"):
        with np.load(path) as d:
            return d["rotations"], d["translations"] if "translations" in d else None
    with open(path, "rb") as fh:
        poses = pickle.load(fh)  # cryoDRGN writes plain numpy arrays in a tuple
    if isinstance(poses, tuple):
        return np.asarray(poses[0]), np.asarray(poses[1]) if len(poses) > 1 else None
    return np.asarray(poses), None


def cryodrgn_to_relion(rotations, translations, box):
    """(Euler angles in degrees, RELION origin in pixels)."""
    euler = matrix_to_euler(np.asarray(rotations, dtype=np.float64))
    origin = np.zeros((len(euler), 2)) if translations is None else np.asarray(translations, np.float64) * box
    return euler, origin


def relion_to_cryodrgn(euler, origin_px, box):
    return euler_to_matrix(np.asarray(euler, dtype=np.float64)), np.asarray(origin_px, np.float64) / box
