"""The three projectors agree on the same object; Gaussian projection is exact and differentiable."""
import numpy as np
import pytest
import torch

from cryoflex_scipion.engine.core import geometry as g
from cryoflex_scipion.engine.core.metrics import image_correlation
from cryoflex_scipion.engine.core.projection import (FourierProjector, gaussian_volume, project_gaussians,
                                                      project_volume_real)


@pytest.fixture(scope="module")
def blob_object():
    gen = torch.Generator().manual_seed(0)
    coords = torch.randn(200, 3, generator=gen, dtype=torch.float64) * 10
    coords[:60] += torch.tensor([14.0, 4.0, -3.0], dtype=torch.float64)  # asymmetric
    weights = torch.rand(200, generator=gen, dtype=torch.float64) + 0.5
    size, apix, sigma = 48, 2.0, 2.5
    volume = gaussian_volume(coords, weights, sigma, size, apix)
    rotations = g.random_rotations(8, torch.Generator().manual_seed(1))
    return coords, weights, sigma, size, apix, volume, rotations


def test_volume_integrates_to_total_weight(blob_object):
    coords, weights, sigma, size, apix, volume, _ = blob_object
    assert volume.sum().item() * apix ** 3 == pytest.approx(weights.sum().item(), rel=2e-3)


def test_gaussian_projection_is_line_integral_of_volume(blob_object):
    """For the identity orientation the analytic projection equals the sum of voxels along z."""
    coords, weights, sigma, size, apix, volume, _ = blob_object
    proj = project_gaussians(coords, weights, sigma, torch.eye(3, dtype=torch.float64)[None], size, apix)
    assert torch.allclose(proj[0], volume.sum(0) * apix, atol=1e-9)


def test_projectors_agree(blob_object):
    coords, weights, sigma, size, apix, volume, rotations = blob_object
    analytic = project_gaussians(coords, weights, sigma, rotations, size, apix)
    fourier = FourierProjector(volume, apix).project(rotations)
    real = project_volume_real(volume, rotations, apix)
    assert image_correlation(analytic, fourier).min().item() > 0.999
    assert image_correlation(analytic, real).min().item() > 0.999
    # Same units (projected density per A^2): integrals agree.
    total = analytic.sum((1, 2)) * apix ** 2
    assert torch.allclose(real.sum((1, 2)) * apix ** 2, total, rtol=5e-3)
    assert ((fourier - analytic).norm() / analytic.norm()).item() < 0.05


def test_projection_direction_convention():
    """A single atom at r appears at (A r)_xy in the image."""
    r = torch.tensor([[9.0, -4.0, 6.0]], dtype=torch.float64)
    e = np.array([[40.0, 70.0, -25.0]])
    a = torch.tensor(g.euler_to_matrix(e))
    img = project_gaussians(r, torch.ones(1, dtype=torch.float64), 1.0, a, 64, 1.0)[0]
    iy, ix = np.unravel_index(int(img.argmax()), img.shape)
    p = (a[0] @ r[0]).numpy()
    assert (ix - 32, iy - 32) == (round(p[0]), round(p[1]))


def test_shifts_move_content_and_are_differentiable():
    r = torch.zeros(1, 3, dtype=torch.float64)
    shift = torch.tensor([[5.0, -3.0]], dtype=torch.float64, requires_grad=True)
    img = project_gaussians(r, torch.ones(1, dtype=torch.float64), 1.0, torch.eye(3, dtype=torch.float64)[None],
                            32, 1.0, shifts_px=shift)
    iy, ix = np.unravel_index(int(img[0].detach().argmax()), (32, 32))
    assert (ix - 16, iy - 16) == (5, -3)
    img.sum().backward()
    assert shift.grad is not None


def test_gradients_in_coordinates_and_rotations(blob_object):
    """Autograd gradients agree with finite differences."""
    coords, weights, sigma, size, apix, _, rotations = blob_object
    target = project_gaussians(coords, weights, sigma, rotations[:2], size, apix)
    c = (coords + 0.3).clone().requires_grad_(True)
    loss = ((project_gaussians(c, weights, sigma, rotations[:2], size, apix) - target) ** 2).sum()
    loss.backward()
    eps = 1e-6
    c2 = c.detach().clone()
    c2[5, 1] += eps
    loss2 = ((project_gaussians(c2, weights, sigma, rotations[:2], size, apix) - target) ** 2).sum()
    assert c.grad[5, 1].item() == pytest.approx(((loss2 - loss) / eps).item(), rel=1e-3, abs=1e-8)

    q = torch.tensor(g.matrix_to_quaternion(rotations[:1].numpy()), requires_grad=True)
    img = project_gaussians(coords, weights, sigma, g.quaternion_to_matrix(q), size, apix)
    ((img - target[:1]) ** 2).sum().backward()
    assert torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0


def test_fourier_projector_differentiable_in_volume(blob_object):
    _, _, _, size, apix, volume, rotations = blob_object
    vol = volume.clone().requires_grad_(True)
    FourierProjector(vol, apix).project(rotations[:2]).sum().backward()
    assert vol.grad is not None and torch.isfinite(vol.grad).all()


def test_per_particle_coordinates(blob_object):
    coords, weights, sigma, size, apix, _, rotations = blob_object
    batch = torch.stack([coords, coords + torch.tensor([3.0, 0.0, 0.0], dtype=torch.float64)])
    imgs = project_gaussians(batch, weights, sigma, rotations[:1].expand(2, 3, 3), size, apix)
    single = project_gaussians(coords, weights, sigma, rotations[:1], size, apix)
    assert torch.allclose(imgs[0], single[0], atol=1e-12)
    assert not torch.allclose(imgs[1], single[0], atol=1e-3)
