"""Orientations and coordinate conventions of the CryoFlex engine.

This docstring is the one place where the conventions are written down; every
other module (projection, reconstruction, simulation, conversion to and from
Scipion/RELION/cryoDRGN) follows it, and ``tests/engine/test_conventions.py``
checks it with projections of real data.

Arrays and coordinates
----------------------
* A volume is an array ``V[z, y, x]`` (MRC order, x fastest); an image is
  ``I[y, x]``.  The rotation centre of a box of size ``D`` is the voxel/pixel
  with index ``D // 2`` on every axis (RELION, cryoDRGN and Xmipp agree on this
  for even and odd boxes).
* Physical coordinates are in Angstrom relative to that centre:
  voxel ``(k, j, i)`` sits at ``r = ((i - D//2), (j - D//2), (k - D//2)) * apix``
  with components ordered ``(x, y, z)``.
* Atomic models given to the engine are already expressed in these box
  coordinates (the conversion subtracts the map origin or the model centre).

Euler angles
------------
Angles are ZYZ ``(rot, tilt, psi)`` in degrees, as in Scipion, Xmipp and RELION.
With the elementary "passive" matrices

    Rz(a) = [[ cos a, sin a, 0], [-sin a, cos a, 0], [0, 0, 1]]
    Ry(b) = [[ cos b, 0, -sin b], [0, 1, 0], [sin b, 0, cos b]]

the orientation matrix is ``A = Rz(psi) @ Ry(tilt) @ Rz(rot)`` (Xmipp's
``Euler_angles2matrix``, RELION's ``Euler_angles2matrix``).

Projection
----------
A point ``r`` of the volume appears at ``p = A @ r`` in the frame of the
projection, which integrates along ``p_z``:

    P_A(x, y) = integral V(A^T (x, y, z)) dz

and, by the Fourier-slice theorem, ``FT[P_A](kx, ky) = FT[V](A^T (kx, ky, 0))``.

Translations
------------
A particle image carries a RELION 3.1 origin ``(rlnOriginXAngst,
rlnOriginYAngst)`` (Xmipp ``shiftX/shiftY``, and Scipion's alignment
matrices, use the same numbers in pixels).  RELION centres a particle by
translating the experimental image by ``+origin`` before comparing it with the
projection, so the experimental image is the projection translated by
``-origin``:

    I(p) = P_A(p + origin)        (image content moved by ``-origin``)

``origin_to_shift`` turns an origin into the displacement of the image
content that :func:`cryoflex_scipion.engine.core.fourier.shift_images` applies.

Quaternions
-----------
Unit quaternions are ``(w, x, y, z)`` with ``w >= 0`` (canonical hemisphere)
and represent the matrix ``A`` (as an active rotation of vectors,
``A v = q v q*``).  With the elementary quaternions
``q_z(a) = (cos a/2, 0, 0, -sin a/2)`` and ``q_y(b) = (cos b/2, 0, -sin b/2, 0)``
(the passive sign of ``Rz``/``Ry`` above) the quaternion of ``A`` is
``q = q_z(psi) * q_y(tilt) * q_z(rot)``, the product order of the DeepHEMNMA
supplementary formula ``q = q_psi (x) q_theta (x) q_phi``.

Every function accepts numpy arrays or torch tensors and returns the same kind.
"""
import math

import numpy as np
import torch

__all__ = [
    "euler_to_matrix", "matrix_to_euler", "matrix_to_quaternion",
    "quaternion_to_matrix", "euler_to_quaternion", "quaternion_to_euler",
    "quaternion_multiply", "canonical_quaternion", "angular_distance",
    "random_rotations", "sphere_directions", "so3_grid", "inplane_matrix",
    "origin_to_shift", "grid_coverage",
]


def _to_torch(x):
    if isinstance(x, torch.Tensor):
        return x, False
    return torch.as_tensor(np.asarray(x, dtype=np.float64)), True


def _back(x, was_numpy):
    return x.detach().cpu().numpy() if was_numpy else x


def euler_to_matrix(euler_deg):
    """ZYZ Euler angles ``(..., 3)`` in degrees -> matrices ``A`` ``(..., 3, 3)``."""
    e, was_np = _to_torch(euler_deg)
    a = torch.deg2rad(e)
    ca, cb, cg = torch.cos(a[..., 0]), torch.cos(a[..., 1]), torch.cos(a[..., 2])
    sa, sb, sg = torch.sin(a[..., 0]), torch.sin(a[..., 1]), torch.sin(a[..., 2])
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    rows = [
        torch.stack([cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb], -1),
        torch.stack([-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb], -1),
        torch.stack([sc, ss, cb], -1),
    ]
    return _back(torch.stack(rows, -2), was_np)


def matrix_to_euler(matrix):
    """Matrices ``A`` -> ZYZ Euler angles in degrees, tilt in [0, 180].

    At the gimbal poles (tilt 0 or 180) only ``rot +/- psi`` is defined; rot is
    then set to 0 and psi carries the whole in-plane rotation (Xmipp's choice).
    """
    m, was_np = _to_torch(matrix)
    cos_tilt = m[..., 2, 2].clamp(-1.0, 1.0)
    sin_tilt = torch.sqrt(m[..., 2, 0] ** 2 + m[..., 2, 1] ** 2)
    tilt = torch.atan2(sin_tilt, cos_tilt)
    regular = sin_tilt > 1e-7
    rot = torch.where(regular, torch.atan2(m[..., 2, 1], m[..., 2, 0]), torch.zeros_like(tilt))
    psi_regular = torch.atan2(m[..., 1, 2], -m[..., 0, 2])
    # Pole: A = Rz(psi) Ry(0 or 180): A[0,1] = sin psi, A[0,0] = +/-cos psi.
    pole_sign = torch.where(cos_tilt >= 0, torch.ones_like(cos_tilt), -torch.ones_like(cos_tilt))
    psi_pole = torch.atan2(m[..., 0, 1], m[..., 0, 0] * pole_sign)
    psi = torch.where(regular, psi_regular, psi_pole)
    return _back(torch.rad2deg(torch.stack([rot, tilt, psi], -1)), was_np)


def matrix_to_quaternion(matrix):
    """Rotation matrices ``(..., 3, 3)`` -> unit quaternions ``(w, x, y, z)``, w >= 0."""
    m, was_np = _to_torch(matrix)
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # Shepperd's method: pick the largest of the four squared components for stability.
    cand = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22,
                        1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    best = cand.argmax(-1)
    q_all = []
    w = torch.sqrt(cand[..., 0].clamp_min(1e-30)) / 2
    q_all.append(torch.stack([w, (m[..., 2, 1] - m[..., 1, 2]) / (4 * w),
                              (m[..., 0, 2] - m[..., 2, 0]) / (4 * w), (m[..., 1, 0] - m[..., 0, 1]) / (4 * w)], -1))
    x = torch.sqrt(cand[..., 1].clamp_min(1e-30)) / 2
    q_all.append(torch.stack([(m[..., 2, 1] - m[..., 1, 2]) / (4 * x), x,
                              (m[..., 0, 1] + m[..., 1, 0]) / (4 * x), (m[..., 0, 2] + m[..., 2, 0]) / (4 * x)], -1))
    y = torch.sqrt(cand[..., 2].clamp_min(1e-30)) / 2
    q_all.append(torch.stack([(m[..., 0, 2] - m[..., 2, 0]) / (4 * y), (m[..., 0, 1] + m[..., 1, 0]) / (4 * y),
                              y, (m[..., 1, 2] + m[..., 2, 1]) / (4 * y)], -1))
    z = torch.sqrt(cand[..., 3].clamp_min(1e-30)) / 2
    q_all.append(torch.stack([(m[..., 1, 0] - m[..., 0, 1]) / (4 * z), (m[..., 0, 2] + m[..., 2, 0]) / (4 * z),
                              (m[..., 1, 2] + m[..., 2, 1]) / (4 * z), z], -1))
    q_all = torch.stack(q_all, -2)
    q = torch.gather(q_all, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    return _back(canonical_quaternion(q / q.norm(dim=-1, keepdim=True)), was_np)


def quaternion_to_matrix(quat):
    """Quaternions ``(w, x, y, z)`` (normalised here) -> rotation matrices."""
    q, was_np = _to_torch(quat)
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rows = [
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ]
    return _back(torch.stack(rows, -2), was_np)


def quaternion_multiply(q1, q2):
    """Hamilton product ``q1 * q2`` of ``(w, x, y, z)`` quaternions."""
    a, was_np = _to_torch(q1)
    b, _ = _to_torch(q2)
    a, b = torch.broadcast_tensors(a, b.to(a.dtype))
    w1, x1, y1, z1 = a.unbind(-1)
    w2, x2, y2, z2 = b.unbind(-1)
    out = torch.stack([
        w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
        w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
        w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
    ], -1)
    return _back(out, was_np)


def canonical_quaternion(quat):
    """Flip quaternions to the hemisphere ``w >= 0`` (q and -q are one rotation)."""
    q, was_np = _to_torch(quat)
    sign = torch.where(q[..., :1] < 0, -torch.ones_like(q[..., :1]), torch.ones_like(q[..., :1]))
    return _back(q * sign, was_np)


def euler_to_quaternion(euler_deg):
    return matrix_to_quaternion(euler_to_matrix(euler_deg))


def quaternion_to_euler(quat):
    return matrix_to_euler(quaternion_to_matrix(quat))


def angular_distance(matrix1, matrix2):
    """Angle in degrees of the rotation taking ``matrix1`` to ``matrix2``.

    ``atan2(sin, cos)`` of the relative rotation, accurate near 0 and 180
    degrees (an arccos of the trace loses precision below about 1e-6 degree).
    """
    m1, was_np = _to_torch(matrix1)
    m2, _ = _to_torch(matrix2)
    rel = torch.matmul(m1.transpose(-1, -2), m2.to(m1.dtype))
    cos = (rel[..., 0, 0] + rel[..., 1, 1] + rel[..., 2, 2] - 1) / 2
    sin = 0.5 * torch.sqrt((rel[..., 2, 1] - rel[..., 1, 2]) ** 2 + (rel[..., 0, 2] - rel[..., 2, 0]) ** 2
                           + (rel[..., 1, 0] - rel[..., 0, 1]) ** 2)
    return _back(torch.rad2deg(torch.atan2(sin, cos)), was_np)


def random_rotations(n, generator=None, dtype=torch.float64):
    """``n`` rotation matrices uniform on SO(3) (normalised Gaussian quaternions)."""
    q = torch.randn(n, 4, generator=generator, dtype=dtype)
    return quaternion_to_matrix(q / q.norm(dim=-1, keepdim=True))


def sphere_directions(step_deg, hemisphere=False):
    """Nearly uniform projection directions ``(rot, tilt)`` in degrees.

    A Fibonacci lattice on the sphere with about ``4 pi / step^2`` points, so
    that neighbouring directions are about ``step_deg`` apart.  ``hemisphere``
    keeps tilt <= 90 (for searches where a direction and its opposite are
    equivalent).
    """
    step = math.radians(step_deg)
    n = max(int(round(4 * math.pi / (step * step * math.sqrt(3) / 2))), 2)
    i = np.arange(n, dtype=np.float64) + 0.5
    cos_tilt = 1 - 2 * i / n
    golden = math.pi * (3 - math.sqrt(5))
    rot = np.degrees(np.mod(golden * np.arange(n), 2 * math.pi))
    rot = np.where(rot > 180, rot - 360, rot)
    tilt = np.degrees(np.arccos(cos_tilt))
    out = np.stack([rot, tilt], -1)
    if hemisphere:
        out = out[tilt <= 90]
    return out


def so3_grid(step_deg, hemisphere=False):
    """Euler angles ``(M, 3)`` covering SO(3) with about ``step_deg`` spacing.

    Directions from :func:`sphere_directions` (a Hopf-fibration style product
    of a uniform sphere grid with uniform in-plane angles): every rotation is
    within about ``step_deg`` of a grid point (see :func:`grid_coverage`).
    """
    dirs = sphere_directions(step_deg, hemisphere)
    n_psi = max(int(math.ceil(360.0 / step_deg)), 1)
    psi = np.arange(n_psi) * (360.0 / n_psi)
    psi = np.where(psi > 180, psi - 360, psi)
    rot = np.repeat(dirs[:, 0], n_psi)
    tilt = np.repeat(dirs[:, 1], n_psi)
    return np.stack([rot, tilt, np.tile(psi, len(dirs))], -1)


def grid_coverage(grid_euler, n_samples=2000, seed=0):
    """Angular distance (degrees) from random rotations to their nearest grid point.

    Returns ``(mean, max)``; used to document and test the grid's resolution.
    """
    gen = torch.Generator().manual_seed(seed)
    rand = random_rotations(n_samples, gen)
    grid = torch.as_tensor(euler_to_matrix(np.asarray(grid_euler)))
    # trace(R^T G) for all pairs through one matrix product.
    traces = torch.einsum("nij,mij->nm", rand, grid)
    best = traces.max(dim=1).values
    ang = torch.rad2deg(torch.acos(((best - 1) / 2).clamp(-1, 1)))
    return float(ang.mean()), float(ang.max())


def inplane_matrix(psi_deg):
    """2D matrices of an in-plane rotation by ``psi`` (the ``Rz(psi)`` block)."""
    p, was_np = _to_torch(psi_deg)
    a = torch.deg2rad(p)
    c, s = torch.cos(a), torch.sin(a)
    return _back(torch.stack([torch.stack([c, s], -1), torch.stack([-s, c], -1)], -2), was_np)


def origin_to_shift(origin):
    """RELION origin -> displacement of the image content (see module docstring)."""
    return -origin
