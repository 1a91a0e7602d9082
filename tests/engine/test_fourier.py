"""Fourier utilities: shifts, resizing, filters, masks, in-plane rotation."""
import numpy as np
import pytest
import torch

from cryoflex_scipion.engine.core import fourier as F
from cryoflex_scipion.engine.core import geometry as g
from cryoflex_scipion.engine.core.metrics import image_correlation
from cryoflex_scipion.engine.core.projection import project_gaussians


def _blobs(n_atoms=60, seed=0):
    gen = torch.Generator().manual_seed(seed)
    coords = torch.randn(n_atoms, 3, generator=gen, dtype=torch.float64) * 5  # well inside the box: no wrap-around
    weights = torch.rand(n_atoms, generator=gen, dtype=torch.float64) + 0.5
    return coords, weights


def test_integer_shift_is_a_roll():
    img = torch.zeros(1, 32, 32, dtype=torch.float64)
    img[0, 10:14, 8:11] = 1.0
    moved = F.shift_images(img, torch.tensor([[3.0, -2.0]], dtype=torch.float64))
    assert torch.allclose(moved, torch.roll(img, shifts=(-2, 3), dims=(1, 2)), atol=1e-12)


def test_subpixel_shift_matches_analytic_projection():
    coords, w = _blobs()
    rot = g.random_rotations(4, torch.Generator().manual_seed(1))
    shifts = torch.tensor([[0.3, -1.7], [2.25, 0.5], [-3.1, 1.1], [0.0, 0.0]], dtype=torch.float64)
    exact = project_gaussians(coords, w, 2.0, rot, 48, 1.0, shifts_px=shifts)
    moved = F.shift_images(project_gaussians(coords, w, 2.0, rot, 48, 1.0), shifts)
    assert ((moved - exact).norm() / exact.norm()).item() < 2e-3


def test_fourier_crop_keeps_values_and_removes_aliasing():
    coords, w = _blobs()
    rot = g.random_rotations(2, torch.Generator().manual_seed(2))
    fine = project_gaussians(coords, w, 2.5, rot, 64, 1.0)
    coarse_direct = project_gaussians(coords, w, 2.5, rot, 32, 2.0)
    cropped = F.fourier_resize(fine, 32)
    assert cropped.shape == (2, 32, 32)
    assert cropped.mean().item() == pytest.approx(fine.mean().item(), rel=1e-9)
    assert image_correlation(cropped, coarse_direct).min().item() > 0.995
    up = F.fourier_resize(cropped, 64)
    assert up.shape == (2, 64, 64) and image_correlation(up, fine).min().item() > 0.99


def test_lowpass_removes_high_frequencies():
    torch.manual_seed(0)
    img = torch.randn(2, 64, 64, dtype=torch.float64)
    out = F.lowpass(img, resolution_A=8.0, apix=1.0, edge_width_px=0)
    spec = F.fft_centered(out).abs()
    r = F.radial_index(64, 2)
    assert spec[:, r > 64 / 8.0 + 0.5].max() < 1e-10
    assert torch.allclose(F.fft_centered(out)[:, r < 7], F.fft_centered(img)[:, r < 7], atol=1e-9)


def test_soft_mask_profile():
    m = F.soft_mask(64, 20, ndim=3, edge_width_px=4)
    assert m[32, 32, 32] == 1 and m[32, 32, 32 + 17] == 1 and m[32, 32, 32 + 23] == 0
    assert 0 < m[32, 32, 32 + 20] < 1


def test_rotate_images_matches_projection_of_rotated_orientation():
    """Rotating the projection of A by psi gives the projection of Rz(psi) A."""
    coords, w = _blobs(seed=3)
    e = np.array([[20.0, 60.0, 10.0]])
    img = project_gaussians(coords, w, 2.0, torch.tensor(g.euler_to_matrix(e)), 48, 1.0)
    rotated = F.rotate_images(img, 35.0)
    e2 = e.copy()
    e2[0, 2] += 35.0
    expected = project_gaussians(coords, w, 2.0, torch.tensor(g.euler_to_matrix(e2)), 48, 1.0)
    assert image_correlation(rotated, expected).item() > 0.995
