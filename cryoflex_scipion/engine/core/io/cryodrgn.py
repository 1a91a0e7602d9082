"""cryoDRGN pose and CTF files (pickles).

Poses: a tuple ``(rotations (N, 3, 3), translations (N, 2))``, float64, as cryoDRGN's
``parse_pose_star`` writes it.  cryoDRGN's rotation matrices are RELION's ``A`` of :mod:`..geometry`
(``R_from_relion``), and its translations are the RELION origin in units of the box:
``trans = rlnOrigin(px) / D``.  Checked on cryoDRGN's own test projections in
``tests/engine/test_conventions.py``.

CTF: one float32 array ``(N, 9)`` with the columns ``D, Apix, dfU, dfV, dfang, kV, Cs, w, phase``
(box in px, A/px, defocus U and V in A, astigmatism angle in degrees, voltage in kV, Cs in mm,
amplitude contrast, phase shift in degrees), the RELION values unchanged, as cryoDRGN 4.3.1's
``parse_ctf_star`` writes it (``pickle.dump(ctf_params.astype(np.float32))``); its
``load_ctf_for_training`` rescales ``Apix`` to the training box and drops ``D``.  CryoFlex's CTF
B-factor and scale have no column there (cryoDRGN's own ``parse_ctf_star`` drops them too).
"""
import pickle

import numpy as np

from ..ctf import CTFParams
from ..geometry import euler_to_matrix, matrix_to_euler

__all__ = ["read_cryodrgn_poses", "cryodrgn_to_relion", "relion_to_cryodrgn", "write_cryodrgn_poses",
           "CTF_COLUMNS", "relion_to_cryodrgn_ctf", "write_cryodrgn_ctf", "read_cryodrgn_ctf",
           "write_cryodrgn_inputs"]

CTF_COLUMNS = ("D", "Apix", "dfU", "dfV", "dfang", "kV", "Cs", "w", "phase")


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


def write_cryodrgn_poses(path, rotations, translations):
    """Write a cryoDRGN pose pickle: ``(rotations (N, 3, 3), translations (N, 2) in units of the box)``."""
    rot = np.asarray(rotations, dtype=np.float64)
    trans = np.asarray(translations, dtype=np.float64)
    if rot.ndim != 3 or rot.shape[1:] != (3, 3) or trans.shape != (len(rot), 2):
        raise ValueError("poses: rotations %s and translations %s; expected (N, 3, 3) and (N, 2)"
                         % (rot.shape, trans.shape))
    with open(path, "wb") as fh:
        pickle.dump((rot, trans), fh)


def relion_to_cryodrgn_ctf(ctf, box, apix, n=None):
    """CryoFlex/RELION CTF parameters -> cryoDRGN's ``(N, 9)`` float32 array (see the module docstring)."""
    n = max(int(np.size(ctf.defocus_u)), 1) if n is None else n
    cols = [box, apix, ctf.defocus_u, ctf.defocus_v, ctf.defocus_angle, ctf.voltage, ctf.cs,
            ctf.amplitude_contrast, ctf.phase_shift]
    return np.stack([np.broadcast_to(np.asarray(c, dtype=np.float64), (n,)) for c in cols], -1).astype(np.float32)


def write_cryodrgn_ctf(path, ctf, box, apix, n=None):
    """Write a cryoDRGN CTF pickle from :class:`..ctf.CTFParams` (per particle or scalars)."""
    with open(path, "wb") as fh:
        pickle.dump(relion_to_cryodrgn_ctf(ctf, box, apix, n), fh)


def read_cryodrgn_ctf(path):
    """``(CTFParams, box (N,), apix (N,))`` from a cryoDRGN CTF pickle."""
    with open(path, "rb") as fh:
        p = np.asarray(pickle.load(fh), dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 9:
        raise ValueError("%s: CTF parameters of shape %s; cryoDRGN's have 9 columns" % (path, p.shape))
    ctf = CTFParams(defocus_u=p[:, 2], defocus_v=p[:, 3], defocus_angle=p[:, 4], voltage=p[:, 5], cs=p[:, 6],
                    amplitude_contrast=p[:, 7], phase_shift=p[:, 8])
    return ctf, p[:, 0].astype(np.int64), p[:, 1]


def write_cryodrgn_inputs(table, pose_path, ctf_path=None):
    """cryoDRGN's pose (and CTF) pickles for a :class:`.particles.ParticleTable` with one box and pixel
    size (RELION origins in A are converted to px, then to units of the box)."""
    box, apix = table.uniform()
    if not table.has_pose:
        raise ValueError("the particles have no poses to write for cryoDRGN")
    rot, trans = relion_to_cryodrgn(table.euler, np.asarray(table.origin_A, np.float64) / apix, box)
    write_cryodrgn_poses(pose_path, rot, trans)
    if ctf_path is not None:
        if not table.has_ctf:
            raise ValueError("the particles have no CTF parameters to write for cryoDRGN")
        write_cryodrgn_ctf(ctf_path, table.ctf, box, apix, n=len(table))
