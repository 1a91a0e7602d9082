"""cryoSPARC pose conventions.

``alignments3D/pose`` is an axis-angle vector ``p``; the RELION matrix of
:mod:`..geometry` is the transpose of its Rodrigues rotation,
``A = expm([p]x)^T`` (pyem's csparc2star and cryoDRGN's parse_pose_csparc
agree), and ``alignments3D/shift`` (pixels) equals ``rlnOriginX/Y`` with the
same sign.
"""
import numpy as np

from ..geometry import matrix_to_euler

__all__ = ["rodrigues", "cs_pose_to_relion"]


def rodrigues(rotvec):
    """Rotation matrices ``exp([p]x)`` of axis-angle vectors ``(N, 3)``."""
    p = np.asarray(rotvec, dtype=np.float64).reshape(-1, 3)
    theta = np.linalg.norm(p, axis=1)
    axis = p / np.where(theta > 1e-12, theta, 1.0)[:, None]
    k = np.zeros((len(p), 3, 3))
    k[:, 0, 1], k[:, 0, 2] = -axis[:, 2], axis[:, 1]
    k[:, 1, 0], k[:, 1, 2] = axis[:, 2], -axis[:, 0]
    k[:, 2, 0], k[:, 2, 1] = -axis[:, 1], axis[:, 0]
    s, c = np.sin(theta)[:, None, None], np.cos(theta)[:, None, None]
    return np.eye(3)[None] + s * k + (1 - c) * (k @ k)


def cs_pose_to_relion(pose, shift_px, apix):
    """(Euler angles in degrees, RELION origin in A) from cryoSPARC pose and shift."""
    euler = matrix_to_euler(np.transpose(rodrigues(pose), (0, 2, 1)))
    origin = np.asarray(shift_px, dtype=np.float64).reshape(-1, 2) * np.asarray(apix, dtype=np.float64).reshape(-1, 1)
    return euler, origin
