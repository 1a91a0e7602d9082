"""Simulated particles: SNR, ground truth, conformations."""
import os

import numpy as np
import pytest
import torch

import cryoflex_scipion
from cryoflex_scipion.engine.core import geometry as g
from cryoflex_scipion.engine.core.atoms import read_atoms
from cryoflex_scipion.engine.core.ctf import compute_ctf
from cryoflex_scipion.engine.core.fourier import fft_centered, ifft_centered
from cryoflex_scipion.engine.core.projection import project_gaussians
from cryoflex_scipion.engine.core.simulation import (Conformations, SimulationSettings, add_noise, render_batch,
                                                      sample_parameters)

MODEL = os.path.join(os.path.dirname(cryoflex_scipion.__file__), "data", "adk_1ake_A.pdb")


@pytest.fixture(scope="module")
def adk():
    return read_atoms(MODEL, "not hydrogen")


@pytest.mark.parametrize("snr,before", [(0.1, 0.5), (1.0, 0.0), (0.05, 1.0), (0.5, 0.3)])
def test_snr_within_ten_percent(adk, snr, before):
    settings = SimulationSettings(n_particles=64, size=64, apix=2.0, snr=snr, noise_before_ctf=before,
                                  max_shift=4.0, seed=1)
    conf = Conformations(adk.coords, adk.weights, center=adk.center())
    params = sample_parameters(settings, conf)
    gen = torch.Generator().manual_seed(3)
    proj, ctf = render_batch(conf, settings, params, np.arange(64), "cpu", torch.float64)
    images, clean, measured = add_noise(proj, ctf, snr, before, gen)
    # Independent measurement over the whole batch: var(signal) / var(noise).
    noise = images - clean
    ratio = (clean.var(dim=(1, 2), unbiased=False) / noise.var(dim=(1, 2), unbiased=False)).mean().item()
    print("SNR requested %.3f, noise before CTF %.0f%%: measured %.4f" % (snr, 100 * before, ratio))
    assert abs(ratio - snr) / snr < 0.10
    assert abs(measured.mean().item() - snr) / snr < 0.10


def test_noise_before_ctf_is_ctf_filtered(adk):
    """With all noise before the CTF, the noise spectrum follows CTF^2 (zero at CTF zeros)."""
    settings = SimulationSettings(n_particles=8, size=64, apix=2.0, snr=0.1, noise_before_ctf=1.0, seed=2)
    conf = Conformations(adk.coords, adk.weights, center=adk.center())
    params = sample_parameters(settings, conf)
    proj, ctf = render_batch(conf, settings, params, np.arange(8), "cpu", torch.float64)
    images, clean, _ = add_noise(proj, ctf, 0.1, 1.0, torch.Generator().manual_seed(0))
    noise_spec = fft_centered(images - clean).abs()
    near_zero = ctf.abs() < 0.02
    strong = ctf.abs() > 0.9
    assert noise_spec[near_zero].mean() < 0.05 * noise_spec[strong].mean()


def test_ground_truth_reproduces_noiseless_images(adk):
    settings = SimulationSettings(n_particles=10, size=48, apix=2.5, max_shift=5.0, seed=4)
    conf = Conformations(adk.coords, adk.weights, center=adk.center())
    params = sample_parameters(settings, conf)
    proj, ctf = render_batch(conf, settings, params, np.arange(10), "cpu", torch.float64)
    images, _, _ = add_noise(proj, ctf, None, 0.5, None)
    # Rebuild each image from the recorded ground truth only.
    a = torch.tensor(g.euler_to_matrix(params["euler"]))
    shift = torch.tensor(g.origin_to_shift(params["origin_A"]) / 2.5)
    coords = torch.tensor(adk.coords - adk.center())
    expected = project_gaussians(coords, torch.tensor(adk.weights), 2.5, a, 48, 2.5, shifts_px=shift)
    expected = ifft_centered(fft_centered(expected) * compute_ctf(params["ctf"], 48, 2.5, dtype=torch.float64))
    assert torch.allclose(images, expected, atol=1e-10)
    assert np.all(np.abs(params["origin_A"]) <= 5.0)
    assert np.all((params["ctf"].defocus_u >= 10000) & (params["ctf"].defocus_u <= 25000))


def test_seed_makes_runs_reproducible(adk):
    settings = SimulationSettings(n_particles=5, size=32, apix=3.0, seed=7)
    conf = Conformations(adk.coords, adk.weights)
    a, b = sample_parameters(settings, conf), sample_parameters(settings, conf)
    assert np.array_equal(a["euler"], b["euler"]) and np.array_equal(a["ctf"].defocus_u, b["ctf"].defocus_u)


def test_normal_mode_conformations(adk):
    rng = np.random.default_rng(0)
    modes = rng.standard_normal((2, len(adk), 3))
    modes /= np.linalg.norm(modes.reshape(2, -1), axis=1)[:, None, None]
    conf = Conformations(adk.coords, adk.weights, modes=modes, amplitude_std=[50.0, 20.0], center=adk.center())
    settings = SimulationSettings(n_particles=2000, size=32, apix=3.0, seed=0)
    labels = sample_parameters(settings, conf)["labels"]
    assert labels.shape == (2000, 2)
    assert np.std(labels, axis=0) == pytest.approx([50.0, 20.0], rel=0.08)
    coords = conf.coords(labels[:3], "cpu", torch.float64).numpy()
    expected = adk.coords - adk.center() + np.einsum("nm,mai->nai", labels[:3], modes)
    assert np.allclose(coords, expected)


def test_trajectory_conformations(adk):
    frames = np.stack([adk.coords, adk.coords + 1.0, adk.coords - 1.0])
    conf = Conformations(adk.coords, adk.weights, frames=frames, center=adk.center())
    labels = sample_parameters(SimulationSettings(n_particles=300, size=32, apix=3.0), conf)["labels"]
    assert set(np.unique(labels)) == {0, 1, 2}
    assert np.allclose(conf.coords(labels[:4], "cpu", torch.float64).numpy(), frames[labels[:4]] - adk.center())
    with pytest.raises(ValueError, match="atoms"):
        Conformations(adk.coords, adk.weights, frames=frames[:, :10])
