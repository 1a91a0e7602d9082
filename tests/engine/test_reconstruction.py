"""Direct Fourier reconstruction against simulated ground truth."""
import os

import numpy as np
import pytest
import torch

import cryoflex_scipion
from cryoflex_scipion.engine.core.atoms import read_atoms
from cryoflex_scipion.engine.core.ctf import CTFParams, apply_ctf, compute_ctf
from cryoflex_scipion.engine.core import geometry as g
from cryoflex_scipion.engine.core.metrics import fsc, resolution_at
from cryoflex_scipion.engine.core.projection import gaussian_volume, project_gaussians
from cryoflex_scipion.engine.core.reconstruction import Backprojector

MODEL = os.path.join(os.path.dirname(cryoflex_scipion.__file__), "data", "adk_1ake_A.pdb")
SIZE, APIX, SIGMA = 40, 3.0, 3.0


@pytest.fixture(scope="module")
def adk_particles():
    model = read_atoms(MODEL, "not hydrogen")
    coords = torch.as_tensor(model.coords - model.center())
    weights = torch.as_tensor(model.weights)
    n = 1500
    rots = g.random_rotations(n, torch.Generator().manual_seed(0))
    rng = np.random.default_rng(0)
    shifts = torch.as_tensor(rng.uniform(-2, 2, (n, 2)))
    images = project_gaussians(coords, weights, SIGMA, rots, SIZE, APIX, shifts_px=shifts)
    du = rng.uniform(8000, 20000, n)
    ctf = CTFParams(defocus_u=du, defocus_v=du - 300, defocus_angle=rng.uniform(0, 180, n))
    truth = gaussian_volume(coords, weights, SIGMA, SIZE, APIX)
    return images, rots, shifts, ctf, truth


def _reconstruct(images, rots, shifts, ctf, batch):
    bp = Backprojector(SIZE, APIX)
    n = images.shape[0]
    for s in range(0, n, batch):
        idx = np.arange(s, min(s + batch, n))
        bp.insert(images[idx].float(), rots[idx].float(), shifts[idx].float(),
                  None if ctf is None else ctf.subset(idx), halves=torch.as_tensor(idx % 2))
    return bp.reconstruct()


def test_noiseless_reconstruction_reaches_nyquist(adk_particles):
    images, rots, shifts, _, truth = adk_particles
    out = _reconstruct(images, rots, shifts, None, 500)
    curve = fsc(out["full_map"], truth)
    res_px = resolution_at(curve, SIZE, APIX, 0.5) / APIX
    print("noiseless, no CTF: FSC 0.5 at %.2f px; lowest FSC up to Nyquist %.3f" % (res_px, curve[1:].min()))
    assert res_px < 2.5
    # Every shell short of Nyquist above 0.98; the (half-sampled) Nyquist shell above 0.5.
    assert curve[1:-1].min() > 0.98 and curve[-1] > 0.5
    rel = ((out["full_map"] - truth).norm() / truth.norm()).item()
    assert rel < 0.05


def test_noiseless_reconstruction_with_ctf(adk_particles):
    images, rots, shifts, ctf, truth = adk_particles
    with_ctf = apply_ctf(images, compute_ctf(ctf, SIZE, APIX, dtype=torch.float64))
    out = _reconstruct(with_ctf, rots, shifts, ctf, 500)
    curve = fsc(out["full_map"], truth)
    res_px = resolution_at(curve, SIZE, APIX, 0.5) / APIX
    print("noiseless, CTF: FSC 0.5 at %.2f px; lowest FSC up to Nyquist %.3f" % (res_px, curve[1:].min()))
    assert res_px < 2.5
    # Half-maps of noiseless data agree almost perfectly.
    assert out["fsc"][1:-1].min() > 0.95


def test_batching_does_not_change_the_map(adk_particles):
    images, rots, shifts, _, _ = adk_particles
    a = _reconstruct(images[:300], rots[:300], shifts[:300], None, 300)["full_map"]
    b = _reconstruct(images[:300], rots[:300], shifts[:300], None, 37)["full_map"]
    assert torch.allclose(a, b, atol=1e-5 * a.abs().max().item())


def test_wrong_shift_sign_is_detected(adk_particles):
    """The reconstruction only works with the shift convention the simulator used."""
    images, rots, shifts, _, truth = adk_particles
    good = fsc(_reconstruct(images, rots, shifts, None, 1500)["full_map"], truth)
    bad = fsc(_reconstruct(images, rots, -shifts, None, 1500)["full_map"], truth)
    assert resolution_at(bad, SIZE, APIX, 0.5) > 2 * resolution_at(good, SIZE, APIX, 0.5)
