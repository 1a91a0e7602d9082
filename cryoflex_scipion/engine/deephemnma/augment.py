"""Label-consistent augmentation: in-plane rotations of the images, with the pose labels turned alike.

The rule, from the conventions of :mod:`..core.geometry` (checked with projections in
``tests/engine/test_deephemnma.py``).  A particle image is ``I(p) = P_A(p + o)`` (``o`` its RELION
origin).  Turning its content so that a point ``p`` moves to ``R p``, with ``R`` =
``inplane_matrix(alpha)`` (the ``Rz(alpha)`` block; the convention of
:func:`..core.fourier.rotate_images`), gives

    I'(p) = I(R^T p) = P_A(R^T p + o) = P_A(R^T (p + R o)) = P_{Rz(alpha) A}(p + R o)

since turning a projection in its plane is the projection of the turned orientation. Hence

    A' = Rz(alpha) A   (psi' = psi + alpha; rot, tilt unchanged;  q' = q_z(alpha) q)
    o' = R o           (the origin turns with the image)

and the normal-mode amplitudes do not change.  The original DeepHEMNMA rotated images without
changing the labels, which teaches the network wrong angles and shifts.

How the images are turned: exact quarter turns (an index permutation about the centre pixel
``D // 2``) then the remaining angle (|beta| <= 45 degrees) as three shears (Unser, Thevenaz &
Yaroslavsky 1995), each a per-row (or per-column) Fourier phase ramp.  A phase ramp is unitary, so
the noise spectrum of a rotated image is the unrotated one's; bilinear interpolation instead
low-passes the noise by an amount that depends on the angle, and the network would learn on noise
textures that the (never interpolated) images to predict do not have.  The shears are exact for
content within about 0.9 of the half box (their intermediate images stay inside the box); only
the corners' background wraps around.
"""
import math

import numpy as np
import torch

from ..core.geometry import canonical_quaternion, euler_to_quaternion, inplane_matrix, quaternion_multiply

__all__ = ["rotate_images_exact", "rotate_labels", "random_inplane", "turn_factors", "apply_turn"]


def _quarter_turn(images):
    """Turn content by +90 degrees about pixel ``D // 2``: ``out[j, i] = in[i, (2c - j) mod D]``.

    (``R = inplane_matrix(90)`` sends ``(x, y)`` to ``(y, -x)``, so ``out(x, y) = in(-y, x)``.)
    For even ``D`` the row ``2c - j = D`` wraps to row 0: the unpaired Nyquist edge of the box.
    """
    size = images.shape[-1]
    c = size // 2
    perm = (2 * c - torch.arange(size, device=images.device)) % size
    return images.transpose(-1, -2)[..., perm, :]


def _shear(images, amount, axis):
    """Shear content by per-image ``amount`` (N,): ``axis='x'`` moves row ``y`` by ``amount * y``
    along x; ``axis='y'`` moves column ``x`` by ``amount * x`` along y (coordinates about ``D // 2``)."""
    size = images.shape[-1]
    c = size // 2
    dim = -1 if axis == "x" else -2
    coord = (torch.arange(size, device=images.device, dtype=images.dtype) - c)
    k = torch.fft.rfftfreq(size, device=images.device, dtype=images.dtype)  # cycles per pixel, 0..1/2
    shift = amount[:, None] * coord[None, :]                                # (N, D): per row or column
    phase = torch.exp(-2j * math.pi * shift[..., None] * k)                 # (N, D, D//2 + 1)
    if axis == "y":
        phase = phase.transpose(-1, -2)                                     # (N, D//2 + 1, D)
    spec = torch.fft.rfft(images, dim=dim)
    return torch.fft.irfft(spec * phase, n=size, dim=dim)


def rotate_images_exact(images, alpha_deg):
    """Turn ``images`` (N, D, D) by ``alpha_deg`` (N,) degrees, content point ``p -> R(alpha) p``.

    Quarter turns, then three Fourier shears ``X(t) Y(-s) X(t)`` with ``t = tan(beta/2)``,
    ``s = sin(beta)``: ``[[1, t], [0, 1]] [[1, 0], [-s, 1]] [[1, t], [0, 1]] = [[c, s], [-s, c]]``,
    the ``inplane_matrix`` of ``beta``.
    """
    alpha = torch.as_tensor(alpha_deg, device=images.device, dtype=images.dtype).reshape(-1)
    alpha = alpha.expand(images.shape[0]) if alpha.numel() == 1 else alpha
    quarters = torch.round(alpha / 90.0)
    beta = torch.deg2rad(alpha - 90.0 * quarters)
    quarters = (quarters.long() % 4)[:, None, None]
    out, turned = images, images
    for k in range(1, 4):  # every image turned 1, 2, 3 times, the right one kept: no host synchronisation
        turned = _quarter_turn(turned)
        out = torch.where(quarters == k, turned, out)
    t, s = torch.tan(beta / 2), torch.sin(beta)
    out = _shear(out, t, "x")
    out = _shear(out, -s, "y")
    return _shear(out, t, "x")


def turn_factors(alpha_deg):
    """``(q_z(alpha) (N, 4), inplane_matrix(alpha) (N, 2, 2))`` of in-plane turns (numpy or torch);
    computed once for many turns, they make :func:`apply_turn` a few operations per batch."""
    if isinstance(alpha_deg, torch.Tensor):
        zeros = torch.zeros_like(alpha_deg)
        return euler_to_quaternion(torch.stack([zeros, zeros, alpha_deg], -1)), inplane_matrix(alpha_deg)
    alpha = np.asarray(alpha_deg, dtype=np.float64)
    zeros = np.zeros_like(alpha)
    return euler_to_quaternion(np.stack([zeros, zeros, alpha], -1)), inplane_matrix(alpha)


def apply_turn(quaternion, origin, turn_quaternion, turn_matrix):
    """Labels after turns given by :func:`turn_factors`: ``q' = q_z q`` (canonical), ``o' = R o``."""
    einsum = torch.einsum if isinstance(origin, torch.Tensor) else np.einsum
    return (canonical_quaternion(quaternion_multiply(turn_quaternion, quaternion)),
            einsum("nij,nj->ni", turn_matrix, origin))


def rotate_labels(quaternion, origin, alpha_deg):
    """Pose labels of images turned by ``alpha_deg``: ``q' = q_z(alpha) q`` (canonical), ``o' = R o``.

    Works on numpy arrays or torch tensors (``quaternion`` (N, 4), ``origin`` (N, 2) in any unit).
    """
    if isinstance(quaternion, torch.Tensor):
        alpha = torch.as_tensor(alpha_deg, dtype=quaternion.dtype, device=quaternion.device)
    else:
        alpha = np.asarray(alpha_deg, dtype=np.float64)
    return apply_turn(quaternion, origin, *turn_factors(alpha))


def random_inplane(images, quaternion, origin, generator=None):
    """Turn each image by a uniform random angle in [0, 360) and its labels alike."""
    n = images.shape[0]
    alpha = torch.rand(n, generator=generator, device=images.device, dtype=torch.float32) * 360.0
    images = rotate_images_exact(images, alpha.to(images.dtype))
    q, o = rotate_labels(quaternion, origin, alpha.to(quaternion.dtype))
    return images, q, o
