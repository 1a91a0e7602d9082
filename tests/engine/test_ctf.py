"""CTF values against hand computation; phase flipping and Wiener filtering."""
import math

import numpy as np
import pytest
import torch

from cryoflex_scipion.engine.core.ctf import CTFParams, apply_ctf, compute_ctf, electron_wavelength, phase_flip, wiener_filter
from cryoflex_scipion.engine.core.fourier import fft_centered


def test_wavelength_300kv():
    # 12.2639 / sqrt(V + 0.97845e-6 V^2) at 300 kV: 0.019687 A
    assert electron_wavelength(300.0) == pytest.approx(0.0196875, abs=1e-6)


def _hand_ctf(kx, ky, du, dv, ang, kv, cs, w, phase, b=0.0):
    lam = 12.2639 / math.sqrt(kv * 1e3 + 0.97845e-6 * (kv * 1e3) ** 2)
    s2 = kx * kx + ky * ky
    alpha = math.atan2(ky, kx)
    df = 0.5 * (du + dv) + 0.5 * (du - dv) * math.cos(2 * (alpha - math.radians(ang)))
    chi = math.pi * lam * df * s2 - math.pi / 2 * cs * 1e7 * lam ** 3 * s2 * s2 + math.radians(phase)
    return (math.sqrt(1 - w * w) * math.sin(chi) + w * math.cos(chi)) * math.exp(-b * s2 / 4)


def test_ctf_matches_hand_values():
    size, apix = 64, 1.5
    p = CTFParams(defocus_u=15000.0, defocus_v=12000.0, defocus_angle=35.0, voltage=300.0, cs=2.7,
                  amplitude_contrast=0.1, phase_shift=20.0, bfactor=50.0)
    ctf = compute_ctf(p, size, apix, dtype=torch.float64)[0].numpy()
    for iy, ix in [(32, 32), (32, 40), (20, 45), (5, 60), (63, 1)]:
        kx, ky = (ix - 32) / (size * apix), (iy - 32) / (size * apix)
        assert ctf[iy, ix] == pytest.approx(_hand_ctf(kx, ky, 15000, 12000, 35, 300, 2.7, 0.1, 20, 50.0), abs=1e-9)


def test_ctf_sign_is_relion_and_opposite_to_cryodrgn():
    """RELION: CTF(0) = +w; cryoDRGN's compute_ctf gives -w (its gamma is -chi)."""
    p = CTFParams(defocus_u=20000.0, defocus_v=20000.0, amplitude_contrast=0.07)
    ctf = compute_ctf(p, 32, 2.0, dtype=torch.float64)[0]
    assert ctf[16, 16].item() == pytest.approx(0.07)
    # cryoDRGN formula at one frequency, written out independently:
    kx, lam = 3 / 64.0, electron_wavelength(300.0)
    gamma = 2 * math.pi * (-0.5 * 20000 * lam * kx ** 2 + 0.25 * 2.7e7 * lam ** 3 * kx ** 4)
    drgn = math.sqrt(1 - 0.07 ** 2) * math.sin(gamma) - 0.07 * math.cos(gamma)
    assert ctf[16, 19].item() == pytest.approx(-drgn, abs=1e-9)


def test_batch_parameters_per_particle():
    p = CTFParams(defocus_u=np.array([10000.0, 20000.0]), defocus_v=np.array([10000.0, 20000.0]))
    both = compute_ctf(p, 32, 2.0)
    first = compute_ctf(p.subset([0]), 32, 2.0)
    assert both.shape == (2, 32, 32)
    assert torch.allclose(both[:1], first)
    assert not torch.allclose(both[0], both[1])


def test_phase_flip_makes_the_transfer_non_negative():
    torch.manual_seed(0)
    img = torch.randn(3, 48, 48, dtype=torch.float64)
    p = CTFParams(defocus_u=np.array([8000.0, 15000.0, 25000.0]), defocus_v=np.array([8000.0, 14000.0, 24000.0]),
                  defocus_angle=np.array([0.0, 30.0, 60.0]))
    ctf = compute_ctf(p, 48, 1.5, dtype=torch.float64)
    flipped = phase_flip(apply_ctf(img, ctf), ctf)
    ratio = fft_centered(flipped) / fft_centered(img)
    keep = ctf.abs() > 1e-3
    # Only frequencies whose conjugate has the same |CTF| (all but the unpaired Nyquist row/column).
    keep[:, 0, :] = False
    keep[:, :, 0] = False
    assert torch.allclose(ratio.real[keep], ctf.abs()[keep], atol=1e-8)
    assert ratio.imag[keep].abs().max() < 1e-8


def test_wiener_filter_restores_image_at_high_snr():
    torch.manual_seed(1)
    img = torch.randn(2, 48, 48, dtype=torch.float64)
    p = CTFParams(defocus_u=np.array([12000.0, 18000.0]), defocus_v=np.array([12000.0, 18000.0]))
    ctf = compute_ctf(p, 48, 1.5, dtype=torch.float64)
    restored = wiener_filter(apply_ctf(img, ctf), ctf, snr=1e6)
    spec_err = (fft_centered(restored) - fft_centered(img)).abs()
    strong = ctf.abs() > 0.2
    strong[:, 0, :] = False
    strong[:, :, 0] = False
    assert spec_err[strong].max() < 1e-4 * fft_centered(img).abs().max()
    # At low SNR the filter damps rather than amplifies: |CTF / (CTF^2 + 1/snr)| <= sqrt(snr)/2.
    low = wiener_filter(apply_ctf(img, ctf), ctf, snr=0.01)
    assert low.norm() < img.norm()
