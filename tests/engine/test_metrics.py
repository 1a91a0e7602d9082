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


# --- CryoBench per-image FSC, AU-FSC and Spearman ----------------------------------------------

from cryoflex_scipion.engine.core.fourier import fft_centered, ifft_centered  # noqa: E402
from cryoflex_scipion.engine.core.metrics import (au_fsc, average_ranks, cryobench_resolution,  # noqa: E402
                                                   cryobench_shells, fsc_curves, fsc_pixres, per_image_au_fsc,
                                                   random_au_fsc, spearman)


def _reference_curve(v1, v2):
    """CryoBench's shell loop written out plainly: shell i = {i - 1 <= r < i}, curve[0] = 1."""
    d = v1.shape[0]
    x = np.arange(-d // 2, d // 2)
    z, y, xx = np.meshgrid(x, x, x, indexing="ij")
    dist = np.sqrt(z ** 2 + y ** 2 + xx ** 2)
    f1 = np.fft.fftshift(np.fft.fftn(np.fft.fftshift(v1)))
    f2 = np.fft.fftshift(np.fft.fftn(np.fft.fftshift(v2)))
    out, prev = [1.0], np.zeros(v1.shape, bool)
    for i in range(1, d // 2):
        cur = dist < i
        sh = cur & ~prev
        a, b = f1[sh], f2[sh]
        den = np.sqrt(np.vdot(a, a) * np.vdot(b, b))
        out.append(float((np.vdot(a, b) / den).real) if den else 1.0)
        prev = cur
    return np.array(out)


def _quadrature(vol, cos_by_shell):
    """A volume whose CryoBench FSC against ``vol`` is exactly ``cos_by_shell`` (shells 1..): every
    Fourier coefficient F becomes cos(t) F + sin(t) i s(k) F with s(-k) = -s(k), so the cross term
    keeps cos(t) |F|^2 and the power stays |F|^2."""
    d = vol.shape[-1]
    f = fft_centered(torch.as_tensor(vol, dtype=torch.float64), 3)
    k = torch.arange(d) - d // 2
    kz, ky, kx = torch.meshgrid(k, k, k, indexing="ij")
    s = torch.where(kz != 0, torch.sign(kz), torch.where(ky != 0, torch.sign(ky), torch.sign(kx))).double()
    shells = cryobench_shells(d)
    c = torch.as_tensor(np.r_[cos_by_shell, np.zeros(3 * d)], dtype=torch.float64)[(shells - 1).clamp_min(0)]
    sn = torch.sqrt((1 - c * c).clamp_min(0))
    return ifft_centered(f * (c + 1j * sn * s), 3).numpy()


def test_cryobench_fsc_matches_their_shell_loop_and_max():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((32, 32, 32))
    b = a + 2 * rng.standard_normal((32, 32, 32))
    assert np.allclose(fsc_curves(a, b), _reference_curve(a, b), atol=1e-12)
    curve = fsc_curves(a, a)
    assert curve.shape == (16,) and np.allclose(curve, 1.0)
    assert np.allclose(fsc_pixres(32), np.arange(16) / 32)
    assert au_fsc(curve) == pytest.approx(15 / 32, abs=1e-12)          # (D/2 - 1) / D
    assert au_fsc(np.ones(64)) == pytest.approx(0.4921875)             # 128 px
    # shell 1 is the origin alone, shell 2 the 26 neighbours (1 <= r < 2)
    counts = np.bincount(cryobench_shells(32).reshape(-1).numpy())
    assert counts[1] == 1 and counts[2] == 26
    batched = fsc_curves(np.stack([a, a]), np.stack([b, a]), batch=1)
    assert np.allclose(batched[0], fsc_curves(a, b)) and np.allclose(batched[1], 1.0)
    mask = np.zeros((32, 32, 32))
    mask[8:24, 8:24, 8:24] = 1
    assert np.allclose(fsc_curves(a, b, mask=mask), _reference_curve(a * mask, b * mask), atol=1e-12)


def test_au_fsc_of_independent_volumes_is_the_theoretical_floor():
    """E|FSC| per shell of n elements = Gamma(n/2) / (sqrt(pi) Gamma((n+1)/2)); 16 pairs of 48^3."""
    expected64, sd64 = random_au_fsc(64)
    assert 0.03 < expected64 < 0.04 and sd64 < 0.003   # 7% of the maximum 0.484, mostly shells 0-2
    expected, sd = random_au_fsc(48)
    a = torch.randn(16, 48, 48, 48, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    b = torch.randn(16, 48, 48, 48, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    values = au_fsc(fsc_curves(a, b, batch=8))
    assert abs(values.mean() - expected) < 4 * sd / np.sqrt(16)
    assert abs(values.std() - sd) < 0.6 * sd


def test_au_fsc_of_a_band_limited_correlation_is_the_analytic_area():
    """Correlated up to shell R, uncorrelated beyond (same power): area = (R + 1/2) / D."""
    rng = np.random.default_rng(2)
    a = rng.standard_normal((48, 48, 48))
    for r in (5, 12):
        cos = np.r_[np.ones(r), np.zeros(48)]       # shells 1..R correlated
        curve = fsc_curves(a, _quadrature(a, cos))
        assert np.allclose(curve[: r + 1], 1.0, atol=1e-9) and np.abs(curve[r + 1:]).max() < 1e-9
        assert au_fsc(curve) == pytest.approx((r + 0.5) / 48, abs=1e-9)
    # a smooth curve with negative values: the area is taken under |FSC|
    cos = np.r_[1.0, np.cos(np.pi * np.arange(2, 24) / 12.0)]
    curve = fsc_curves(a, _quadrature(a, cos))
    assert np.allclose(curve[1:], cos, atol=1e-9)
    full = np.abs(np.r_[1.0, cos])
    assert au_fsc(curve) == pytest.approx(((full[1:] + full[:-1]) / 2).sum() / 48, abs=1e-9)   # trapezoid


def test_cryobench_resolution_and_summary():
    curve = np.array([1.0, 1.0, 0.9, 0.6, 0.4, 0.1, 0.05, 0.0])     # box 16
    assert cryobench_resolution(curve, 0.5) == pytest.approx(16 / 4)  # first below 0.5: shell 4
    assert cryobench_resolution(curve, 0.143, apix=2.0) == pytest.approx(2.0 * 16 / 5)
    assert cryobench_resolution(np.ones(8), 0.143, apix=3.0) == pytest.approx(6.0)  # never: 2 px
    s = per_image_au_fsc(np.stack([curve, np.ones(8)]), apix=2.0, labels=[0, 1])
    assert s["n"] == 2 and s["au_fsc_max_possible"] == pytest.approx(7 / 16)
    assert s["au_fsc_mean"] == pytest.approx((au_fsc(curve) + 7 / 16) / 2)
    assert s["au_fsc_sd"] == pytest.approx(abs(au_fsc(curve) - 7 / 16) / 2)
    assert s["fsc05_px_median"] == pytest.approx(3.0) and s["fsc05_A_mean"] == pytest.approx(6.0)
    assert s["per_label"]["1"]["au_fsc_mean"] == pytest.approx(7 / 16)


def test_spearman():
    rng = np.random.default_rng(3)
    x = rng.standard_normal(50)
    assert spearman(x, np.exp(3 * x) + 1) == pytest.approx(1.0)
    assert spearman(x, -x ** 3) == pytest.approx(-1.0)
    assert np.allclose(average_ranks([10, 20, 20, 30, 20]), [1, 3, 3, 5, 3])
    # by hand: ranks a = (1, 2.5, 2.5, 4), b = (1, 3, 2, 4); Pearson = 4.5 / sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / np.sqrt(4.5 * 5.0))
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))
