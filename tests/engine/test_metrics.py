"""FSC, resolution, correlations, RMSD."""
import numpy as np
import pytest
import torch

from cryoflex_scipion.engine.core import geometry as g
from cryoflex_scipion.engine.core.fourier import lowpass
from cryoflex_scipion.engine.core.metrics import (angular_error, fsc, image_correlation, kabsch, model_map_fsc,
                                                   real_space_correlation, resolution_at, rmsd)
from cryoflex_scipion.engine.core.projection import gaussian_volume


def test_fsc_identical_and_independent():
    torch.manual_seed(0)
    a = torch.randn(32, 32, 32, dtype=torch.float64)
    b = torch.randn(32, 32, 32, dtype=torch.float64)
    assert np.allclose(fsc(a, a), 1.0)
    assert np.abs(fsc(a, b)[2:]).max() < 0.2


def test_fsc_resolution_of_lowpassed_noise():
    """Common signal low-passed at 8 A plus independent noise: FSC falls near 8 A."""
    torch.manual_seed(1)
    signal = lowpass(torch.randn(48, 48, 48, dtype=torch.float64) * 10, 8.0, 1.0, ndim=3, edge_width_px=1)
    a = signal + 0.05 * torch.randn(48, 48, 48, dtype=torch.float64)
    b = signal + 0.05 * torch.randn(48, 48, 48, dtype=torch.float64)
    res = resolution_at(fsc(a, b), 48, 1.0, 0.5)
    assert 7.0 < res < 9.5


def test_resolution_interpolates_crossing():
    curve = np.array([1.0, 0.9, 0.6, 0.4, 0.1])
    # 0.5 is crossed halfway between shells 2 and 3 -> frequency 2.5 / (8 * 2.0 A)
    assert resolution_at(curve, 8, 2.0, 0.5) == pytest.approx(8 * 2.0 / 2.5)
    assert resolution_at(np.ones(5), 8, 2.0, 0.143) == pytest.approx(4.0)  # never crosses: Nyquist


def test_correlations():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((16, 16, 16))
    assert real_space_correlation(a, 3 * a + 1) == pytest.approx(1.0)
    assert real_space_correlation(a, -a) == pytest.approx(-1.0)
    t = torch.tensor(rng.standard_normal((4, 8, 8)))
    assert torch.allclose(image_correlation(t, 2 * t + 5), torch.ones(4, dtype=t.dtype))


def test_rmsd_with_superposition():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((100, 3)) * 10
    rot = g.euler_to_matrix([30.0, 40.0, 50.0])
    y = x @ rot.T + np.array([5.0, -2.0, 1.0])
    assert rmsd(x, y) > 1.0
    assert rmsd(x, y, superpose=True) == pytest.approx(0.0, abs=1e-9)
    r, t = kabsch(x, y)
    assert np.allclose(r, rot)


def test_angular_error():
    a = g.euler_to_matrix(np.array([[0.0, 10.0, 0.0], [50.0, 60.0, 70.0]]))
    b = g.euler_to_matrix(np.array([[0.0, 15.0, 0.0], [50.0, 60.0, 70.0]]))
    assert np.allclose(angular_error(a, b), [5.0, 0.0], atol=1e-6)


def test_model_map_fsc_detects_a_shifted_model():
    rng = np.random.default_rng(3)
    coords = rng.standard_normal((150, 3)) * 8
    weights = np.ones(150)
    volume = gaussian_volume(torch.tensor(coords), weights, 2.0, 40, 2.0)
    same, _ = model_map_fsc(coords, weights, volume, 2.0, sigma=2.0)
    moved, _ = model_map_fsc(coords + np.array([4.0, 0.0, 0.0]), weights, volume, 2.0, sigma=2.0)
    assert same.min() > 0.999
    assert resolution_at(moved, 40, 2.0, 0.5) > 2 * resolution_at(same, 40, 2.0, 0.5)
