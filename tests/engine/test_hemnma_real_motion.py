"""HEMNMA on real motion (CPU): particles from five frames of the DIMS closed -> open AdK transition, not
from normal modes (tests/data/adk_dims_subset.npz: frames 0, 24, 48, 72, 97; reference frame 0 with RTB
modes 7-9; 64 px at 1.6 A/px, SNR 0.3, CTF).

What it checks, with bounds from a first run (numbers in the comments):
- the fit quality falls along the transition with the reference alone, and flags the open particles;
- with the open end as another reference (``--other-references``, one intermediate) the open particles align
  (angle error on frames 72 and 97: about 30 deg with the reference alone, a few degrees with the path),
  the amplitudes order the frames, and the winning conformation follows the frame;
- adding modes (7-12 instead of 7-9) does not make particles of the reference conformation worse.
The benchmark (benchmarks/bench_hemnma_real.py, H200) measures the same at full size.
"""
import os

import numpy as np
import pytest
import torch

from cryoflex_scipion.engine.core import geometry as g
from cryoflex_scipion.engine.core.atoms import read_atoms
from cryoflex_scipion.engine.core.runtime import EngineInputError
from cryoflex_scipion.engine.core.simulation import (Conformations, SimulationSettings, add_noise, render_batch,
                                                      sample_parameters)
from cryoflex_scipion.engine.hemnma.align import AlignmentSettings
from cryoflex_scipion.engine.hemnma.pipeline import load_inputs, residue_groups
from cryoflex_scipion.engine.hemnma.quality import poor_fit
from cryoflex_scipion.engine.hemnma.references import MultiReferenceAligner, reference_path
from cryoflex_scipion.engine.nma.elastic import compute_modes, rtb_blocks
from cryoflex_scipion.engine.yardstick.scoring import latent_correlations

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
PER_FRAME = 6


@pytest.fixture(scope="module")
def dims_case():
    model = read_atoms(os.path.join(DATA, "adk_dims_frame000_heavy.npz"))
    with np.load(os.path.join(DATA, "adk_dims_subset.npz")) as d:
        frames = d["coords"].astype(np.float64)
    modes = compute_modes(model.coords, 12, "RTB", 8.0, blocks=rtb_blocks(model.chains, model.resids, 10)).vectors
    n = len(frames) * PER_FRAME
    conf = Conformations(model.coords, model.weights, frames=frames, center=model.center())
    settings = SimulationSettings(n_particles=n, size=64, apix=1.6, snr=0.3, max_shift=2.0, defocus_min=10000,
                                  defocus_max=25000, seed=3, sigma=1.0)
    params = sample_parameters(settings, conf)
    params["labels"] = np.repeat(np.arange(len(frames)), PER_FRAME)
    proj, ctf = render_batch(conf, settings, params, np.arange(n), "cpu")
    images, _, _ = add_noise(proj, ctf, 0.3, 0.5, torch.Generator().manual_seed(4))
    return model, frames, modes, images.numpy(), params


def _align(model, modes, images, params, path=None, index=None):
    settings = AlignmentSettings(working_size=48, search_size=32, coarse_size=32, ctf_mode="full", max_shift=3.0,
                                 coarse_groups=residue_groups(model))
    path = model.coords[None] if path is None else path
    aligner = MultiReferenceAligner(path, model.weights, modes, 1.0, "cpu", 64, 1.6, settings)
    index = np.arange(len(images)) if index is None else index
    out = aligner.align(images[index], params["ctf"].subset(index))
    out["angle"] = g.angular_distance(g.euler_to_matrix(out["euler"]), g.euler_to_matrix(params["euler"][index]))
    return out


@pytest.fixture(scope="module")
def single_and_path(dims_case):
    model, frames, modes, images, params = dims_case
    single = _align(model, modes[6:9], images, params)
    path = _align(model, modes[6:9], images, params, reference_path(model.coords, [frames[-1]], 1))
    return single, path


def _per_frame(values, labels):
    return np.array([np.nanmean(values[labels == k]) for k in range(labels.max() + 1)])


def test_fit_quality_flags_motion_the_modes_cannot_explain(dims_case, single_and_path):
    labels = dims_case[4]["labels"]
    single, _ = single_and_path
    quality = _per_frame(single["fit_quality"], labels)
    print("fit quality per frame", np.round(quality, 3))
    # first run: 1.04 0.99 0.97 0.93 0.93 (frames 0, 24, 48, 72, 97)
    assert quality[0] > 0.98
    assert quality[0] - quality[-2:].mean() > 0.06
    flagged = poor_fit(single["fit_quality"], single["fit_quality_error"])
    assert flagged[labels == 0].mean() <= 1 / PER_FRAME
    assert flagged[labels >= 3].mean() >= 0.25


def test_other_reference_aligns_the_open_particles(dims_case, single_and_path):
    labels = dims_case[4]["labels"]
    single, path = single_and_path
    far = labels >= 3
    print("angle per frame, reference only", np.round(_per_frame(single["angle"], labels), 1))
    print("angle per frame, with the open end", np.round(_per_frame(path["angle"], labels), 1))
    rho_single = latent_correlations(single["amplitudes"], labels)["abs_rho_pc1_frame"]
    rho_path = latent_correlations(path["amplitudes"], labels)["abs_rho_pc1_frame"]
    print("rho(PC1, frame): reference only %.2f, with the open end %.2f" % (rho_single, rho_path))
    # first run: far frames 29 deg alone, 3 deg with the path; rho 0.55 -> 0.93
    assert path["angle"][far].mean() < 6.0
    assert path["angle"][far].mean() < 0.5 * single["angle"][far].mean()
    assert np.mean(path["angle"] > 10) <= 0.05
    assert rho_path >= 0.85 and rho_path > rho_single
    # the winning conformation follows the transition: the open frames pick the open end or the intermediate
    assert np.mean(path["reference"][labels == 4] >= 1) >= 0.8
    assert np.mean(path["reference"][labels == 0] <= 1) >= 0.8
    assert path["fit_quality"][far].mean() > single["fit_quality"][far].mean()


@pytest.fixture(scope="module")
def six_modes_at_reference(dims_case):
    model, _, modes, images, params = dims_case
    return _align(model, modes[6:12], images, params, index=np.where(params["labels"] == 0)[0])


def test_more_modes_do_not_break_the_reference_conformation(dims_case, single_and_path, six_modes_at_reference):
    """Six modes once sent 64 % of the reference-conformation particles beyond 10 deg (no undeformed
    template in the search grid); none now."""
    three = single_and_path[0]["angle"][dims_case[4]["labels"] == 0]
    six = six_modes_at_reference["angle"]
    print("frame-0 particles: angle %.2f (modes 7-9) %.2f (modes 7-12)" % (three.mean(), six.mean()))
    assert six.max() < 10.0


@pytest.mark.xfail(strict=True, reason="issue 17 target not met: extra modes fit noise, 1.8 -> 3.1 deg here, "
                                       "3.9 -> 4.4 deg on the H200 benchmark's first fifth")
def test_more_modes_never_make_the_reference_conformation_worse(dims_case, single_and_path, six_modes_at_reference):
    three = single_and_path[0]["angle"][dims_case[4]["labels"] == 0]
    assert six_modes_at_reference["angle"].mean() <= three.mean() + 0.25


def test_reference_path_superposes_and_interpolates(dims_case):
    model, frames, _, _, _ = dims_case
    rot = g.euler_to_matrix(np.array([[30.0, 40.0, 50.0]]))[0]
    moved = frames[-1] @ rot.T + np.array([5.0, -3.0, 2.0])
    path = reference_path(model.coords, [moved], 2)
    assert path.shape == (4,) + model.coords.shape
    np.testing.assert_allclose(path[0], model.coords)
    unmoved = reference_path(model.coords, [frames[-1]], 2)[-1]
    np.testing.assert_allclose(path[-1], unmoved, atol=1e-6)  # superposed on the reference whatever its frame
    assert np.sqrt(((unmoved - frames[-1]) ** 2).sum(1).mean()) < 0.5  # (the subset is superposed by C-alpha)
    np.testing.assert_allclose(path[1], path[0] + (path[-1] - path[0]) / 3, atol=1e-9)


def test_other_reference_atoms_are_matched_or_refused(tmp_path, dims_case):
    model, frames = dims_case[0], dims_case[1]
    modes = _modes_file(tmp_path, len(model))
    particles, atoms = os.path.join(DATA, "relion31.star"), os.path.join(DATA, "adk_dims_frame000_heavy.npz")
    # the open frame with its atoms in another order: matched back by chain, residue and name
    order = np.random.default_rng(0).permutation(len(model))
    shuffled = model.select(order)
    shuffled.coords = frames[-1][order]
    path = str(tmp_path / "shuffled.npz")
    shuffled.save(path)
    inputs = load_inputs(particles, atoms, modes, other_references=[path], intermediates=0, apix=3.0)
    assert inputs.path.shape == (2, len(model), 3)
    np.testing.assert_allclose(inputs.path[1], reference_path(model.coords, [frames[-1]], 0)[1], atol=1e-6)
    # five atoms missing: refused on one line naming the file and a missing atom
    short = model.select(np.arange(len(model)) < len(model) - 5)
    path = str(tmp_path / "short.npz")
    short.save(path)
    with pytest.raises(EngineInputError, match="other reference .*short.npz has 1651 atoms but the reference has "
                                               "1656 .*5 reference atoms missing"):
        load_inputs(particles, atoms, modes, other_references=[path], apix=3.0)


def _modes_file(tmp_path, n_atoms):
    path = str(tmp_path / "modes.npy")
    np.save(path, np.ones((3, n_atoms, 3)) / np.sqrt(3 * n_atoms))
    return path
