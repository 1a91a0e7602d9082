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

The images are turned by :func:`..core.fourier.rotate_images_exact` (quarter turns and Fourier
shears), not bilinearly: interpolation low-passes the noise by an amount that depends on the angle,
and the network would learn on noise textures that the (never interpolated) images to predict do
not have.
"""
import numpy as np
import torch

from ..core.fourier import rotate_images_exact
from ..core.geometry import canonical_quaternion, euler_to_quaternion, inplane_matrix, quaternion_multiply

__all__ = ["rotate_images_exact", "rotate_labels", "random_inplane", "turn_factors", "apply_turn"]


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
