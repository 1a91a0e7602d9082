"""Normal modes: agreement with ProDy, the AdK transition, fluctuations, pseudoatoms, formats."""
import os

import numpy as np
import pytest

import cryoflex_scipion
from cryoflex_scipion.engine.core.atoms import deform, read_atoms
from cryoflex_scipion.engine.core.io.mrc import read_map
from cryoflex_scipion.engine.nma import elastic
from cryoflex_scipion.engine.nma.analysis import (collectivity, cumulative_overlap, mode_scores, overlap, pearson,
                                                   square_fluctuations)
from cryoflex_scipion.engine.nma.elastic import NetworkError, compute_modes, rtb_blocks
from cryoflex_scipion.engine.nma.formats import write_animation, write_nmd
from cryoflex_scipion.engine.nma.pseudoatoms import fit_pseudoatoms

CLOSED = os.path.join(os.path.dirname(cryoflex_scipion.__file__), "data", "adk_1ake_A.pdb")


@pytest.fixture(scope="module")
def adk(data_path_module):
    opened = read_atoms(data_path_module("4akeA_alg_fixed.pdb"), "name CA")
    closed = read_atoms(CLOSED, "name CA")
    assert np.array_equal(opened.resids, closed.resids)
    return opened, closed


@pytest.fixture(scope="module")
def data_path_module():
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
    return lambda name: os.path.join(here, name)


def _same_up_to_sign(a, b, atol):
    a = a.reshape(len(a), -1)
    b = b.reshape(len(b), -1)
    dots = np.abs((a * b).sum(1))
    return np.all(np.abs(dots - 1) < atol)


def test_anm_and_rtb_equal_prody(adk):
    prody = pytest.importorskip("prody")
    opened, _ = adk
    ours = compute_modes(opened.coords, 20, "ANM", 15.0)
    anm = prody.ANM()
    anm.buildHessian(opened.coords, cutoff=15.0, gamma=1.0)
    anm.calcModes(14)
    assert np.allclose(ours.eigenvalues[6:], anm.getEigvals(), rtol=1e-8)
    assert np.all(np.abs(ours.eigenvalues[:6]) < 1e-10)
    assert _same_up_to_sign(ours.vectors[6:], anm.getEigvecs().T, 1e-8)

    blocks = rtb_blocks(opened.chains, opened.resids, 10)
    ours = compute_modes(opened.coords, 20, "RTB", 15.0, blocks=blocks)
    rtb = prody.RTB()
    rtb.buildHessian(opened.coords, blocks, cutoff=15.0, gamma=1.0)
    rtb.calcModes(14)
    assert np.allclose(ours.eigenvalues[6:], rtb.getEigvals(), rtol=1e-7)
    assert _same_up_to_sign(ours.vectors[6:], rtb.getEigvecs().T, 1e-7)


def test_sparse_eigensolver_matches_dense(adk, monkeypatch):
    opened, _ = adk
    blocks = rtb_blocks(opened.chains, opened.resids, 5)
    dense = [compute_modes(opened.coords, 16, m, 15.0, blocks=blocks) for m in ("ANM", "RTB")]
    monkeypatch.setattr(elastic, "DENSE_LIMIT", 0)
    sparse = [compute_modes(opened.coords, 16, m, 15.0, blocks=blocks) for m in ("ANM", "RTB")]
    for d, s in zip(dense, sparse):
        assert np.allclose(d.eigenvalues[6:], s.eigenvalues[6:], rtol=1e-7)
        assert _same_up_to_sign(d.vectors[6:], s.vectors[6:], 1e-6)


def test_adk_transition_overlaps(adk):
    """ANM on open AdK (C-alpha, 15 A) against the displacement to closed AdK (ProDy: 0.799, 0.966)."""
    opened, closed = adk
    displacement = closed.coords - opened.coords
    anm = compute_modes(opened.coords, 20, "ANM", 15.0)
    first = overlap(anm.vectors[6:7], displacement)[0]
    cumulative = cumulative_overlap(anm.vectors[6:16], displacement)[-1]
    rtb = compute_modes(opened.coords, 20, "RTB", 15.0, blocks=rtb_blocks(opened.chains, opened.resids, 10))
    cumulative_rtb = cumulative_overlap(rtb.vectors[6:16], displacement)[-1]
    print("ANM: mode 7 overlap %.4f, 10 modes %.4f; RTB (10 residues) 10 modes %.4f (%.1f%% of ANM)"
          % (first, cumulative, cumulative_rtb, 100 * cumulative_rtb / cumulative))
    assert first >= 0.79
    assert cumulative >= 0.96
    assert cumulative_rtb >= 0.9 * cumulative


def test_fluctuations_follow_bfactors():
    """1AKE chain A, C-alpha ANM over all modes: correlation with crystallographic B-factors (ProDy: 0.531)."""
    closed = read_atoms(CLOSED, "name CA")
    modes = compute_modes(closed.coords, 3 * len(closed), "ANM", 15.0)
    r = pearson(square_fluctuations(modes.vectors, modes.eigenvalues), closed.bfactors)
    print("B-factor correlation %.4f" % r)
    assert r >= 0.50


def test_modes_are_unit_norm_and_orthogonal(adk):
    opened, _ = adk
    m = compute_modes(opened.coords, 20, "RTB", 12.0, blocks=rtb_blocks(opened.chains, opened.resids, 10))
    flat = m.vectors.reshape(20, -1)
    assert np.allclose(flat @ flat.T, np.eye(20), atol=1e-8)


def test_disconnected_network_names_atoms(adk):
    opened, _ = adk
    coords = np.concatenate([opened.coords, opened.coords[:5] + 200.0])
    labels = ["atom%d" % i for i in range(len(coords))]
    with pytest.raises(NetworkError, match="disconnected") as err:
        compute_modes(coords, 20, "ANM", 15.0, labels=labels)
    assert "atom214" in str(err.value) and "5 atoms" in str(err.value)


def test_too_many_modes(adk):
    opened, _ = adk
    with pytest.raises(NetworkError, match="degrees of freedom"):
        compute_modes(opened.coords[:10], 40, "ANM", 15.0)
    with pytest.raises(NetworkError, match="rigid blocks"):
        compute_modes(opened.coords, 200, "RTB", 15.0, blocks=rtb_blocks(opened.chains, opened.resids, 10))


def test_collectivity_and_scores():
    uniform = np.ones((1, 50, 3)) / np.sqrt(150)
    single = np.zeros((1, 50, 3))
    single[0, 3] = [1.0, 0.0, 0.0]
    assert collectivity(uniform)[0] == pytest.approx(1.0)
    assert collectivity(single)[0] == pytest.approx(1 / 50)
    # ContinuousFlex: score_j = (j + rank_j + 2) / (2 M)
    assert np.allclose(mode_scores([0.2, 0.9, 0.5]), [(0 + 2 + 2) / 6, (1 + 0 + 2) / 6, (2 + 1 + 2) / 6])


def test_deformation_utility(adk):
    opened, _ = adk
    m = compute_modes(opened.coords, 10, "ANM", 15.0)
    amps = np.array([[0, 0, 0, 0, 0, 0, 30.0, -10.0, 0, 0]])
    moved = deform(opened.coords, m.vectors, amps)
    assert np.allclose(moved[0], opened.coords + 30 * m.vectors[6] - 10 * m.vectors[7])
    # Unit-norm modes: the RMS displacement of amplitude a is a / sqrt(A).
    rms = np.sqrt(((moved[0] - opened.coords) ** 2).sum(1).mean())
    assert rms == pytest.approx(np.sqrt(30 ** 2 + 10 ** 2) / np.sqrt(len(opened)))


def test_nmd_and_animation_files(adk, tmp_path):
    prody = pytest.importorskip("prody")
    opened, _ = adk
    m = compute_modes(opened.coords, 10, "ANM", 15.0)
    nmd = str(tmp_path / "m.nmd")
    write_nmd(nmd, opened, m.vectors, m.eigenvalues)
    parsed, atoms = prody.parseNMD(nmd)
    assert parsed.numModes() == 4 and np.allclose(atoms.getCoords(), opened.coords, atol=1e-3)
    assert _same_up_to_sign(m.vectors[6:], parsed.getEigvecs().T / np.linalg.norm(parsed.getEigvecs(), axis=0)[:, None],
                            1e-4)
    anim = str(tmp_path / "a.pdb")
    write_animation(anim, opened, m.vectors[6], 20.0, n_frames=6)
    ens = prody.parsePDB(anim)
    assert ens.numCoordsets() == 10
    assert np.allclose(ens.getCoordsets()[0], opened.coords - 20.0 * m.vectors[6], atol=2e-3)


def test_pseudoatoms_of_1ake_map(data_path_module):
    """Pseudoatoms of 1ake.mrc reproduce the map (>= 0.95) and keep the 1AKE->4AKE motion in 10 modes."""
    volume, info = read_map(data_path_module("1ake.mrc"))
    fit = fit_pseudoatoms(volume, info.apix, info.origin, float(volume.mean() + volume.std()))
    print("pseudoatoms: %d, correlation %.4f at %.1f A (masked), %.4f (box)"
          % (len(fit.coords), fit.correlation, fit.resolution, fit.correlation_box))
    assert fit.correlation >= 0.95
    closed = read_atoms(CLOSED, "name CA")
    opened = read_atoms(data_path_module("4akeA_alg_fixed.pdb"), "name CA")
    # The pseudoatoms overlay the atomic model (the map's origin is honoured).
    from scipy.spatial import cKDTree
    dist, nearest = cKDTree(closed.coords).query(fit.coords)
    assert np.median(dist) < 3.0
    displacement = opened.coords - closed.coords
    atomic = cumulative_overlap(compute_modes(closed.coords, 16, "ANM", 15.0).vectors[6:16], displacement)[-1]
    pseudo = cumulative_overlap(compute_modes(fit.coords, 16, "ANM", 15.0).vectors[6:16],
                                displacement[nearest])[-1]
    print("10-mode cumulative overlap 1AKE->4AKE: atoms %.4f, pseudoatoms %.4f (%.0f%%)"
          % (atomic, pseudo, 100 * pseudo / atomic))
    assert pseudo >= 0.8 * atomic
