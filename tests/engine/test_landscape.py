"""Landscape: PCA, groups that contain exactly the right particles, group reconstructions."""
import json
import os

import numpy as np
import pytest
import torch

from cryoflex_scipion.engine.landscape.groups import (gmm_groups, keep_core, kmeans_groups, parse_ranges,
                                                       quantile_groups, range_groups)
from cryoflex_scipion.engine.landscape.reduce import fit_pca


def test_pca_recovers_axes_and_round_trips():
    rng = np.random.default_rng(0)
    t = rng.standard_normal((5000, 2)) * [30.0, 5.0]
    axes = np.linalg.qr(rng.standard_normal((4, 4)))[0][:, :2].T   # two orthonormal directions in 4-D
    x = t @ axes + [100, -50, 20, 0]
    p = fit_pca(x, 2)
    assert abs(abs(p.components[0] @ axes[0]) - 1) < 1e-3 and abs(abs(p.components[1] @ axes[1]) - 1) < 1e-2
    assert p.explained[0] == pytest.approx(900, rel=0.05) and p.explained[1] == pytest.approx(25, rel=0.05)
    assert np.allclose(p.inverse(p.transform(x)), x, atol=1e-8)


def test_ranges_and_quantiles_select_exactly():
    rng = np.random.default_rng(1)
    z = rng.uniform(-1000, 1000, (10000, 2))
    specs = [parse_ranges("1:-900:-100"), parse_ranges("1:0:500, 2:-50:50")]
    labels = range_groups(z, specs)
    first = (z[:, 0] >= -900) & (z[:, 0] <= -100)
    second = (z[:, 0] >= 0) & (z[:, 0] <= 500) & (np.abs(z[:, 1]) <= 50)
    assert np.array_equal(labels == 0, first) and np.array_equal(labels == 1, second)
    assert np.all(labels[~first & ~second] == -1)
    with pytest.raises(ValueError, match="axis:min:max"):
        parse_ranges("1:-900")
    q = quantile_groups(z, 900)
    sizes = np.bincount(q)
    assert len(sizes) == 11 and sizes.min() >= 900
    order = np.argsort(z[:, 0])
    assert np.all(np.diff(q[order]) >= 0)          # groups are consecutive along PC1


def test_kmeans_and_gmm_find_separated_clusters():
    rng = np.random.default_rng(2)
    centres = np.array([[-50.0, 0.0], [0.0, 40.0], [60.0, -10.0]])
    truth = rng.integers(0, 3, 3000)
    z = centres[truth] + rng.standard_normal((3000, 2)) * 3
    for labels in (kmeans_groups(z, 3), gmm_groups(z, 3)):
        # groups are numbered along PC1, like the centres above
        assert np.array_equal(labels, truth)
    core = keep_core(z, truth, 0.5)
    assert abs((core >= 0).sum() - 1500) <= 3
    for g in range(3):
        kept = z[core == g]
        dropped = z[(truth == g) & (core < 0)]
        centre = np.median(z[truth == g], axis=0)
        assert np.linalg.norm(kept - centre, axis=1).max() <= np.linalg.norm(dropped - centre, axis=1).min()


def test_landscape_command_groups_and_reconstructions(tmp_path):
    """Particles of two distinct conformations: two groups, each reconstruction matching its own
    conformation's map better than the other's."""
    import cryoflex_scipion
    from cryoflex_scipion.engine.__main__ import main
    from cryoflex_scipion.engine.core.atoms import read_atoms
    from cryoflex_scipion.engine.core.io.mrc import read_map
    from cryoflex_scipion.engine.core.metrics import fsc, resolution_at
    from cryoflex_scipion.engine.core.projection import gaussian_volume
    from cryoflex_scipion.engine.nma.elastic import compute_modes, rtb_blocks
    model_path = os.path.join(os.path.dirname(cryoflex_scipion.__file__), "data", "adk_1ake_A.pdb")
    model = read_atoms(model_path, "not hydrogen")
    modes = compute_modes(model.coords, 8, "RTB", 8.0, blocks=rtb_blocks(model.chains, model.resids, 10)).vectors[6:8]
    model.save(str(tmp_path / "ref.npz"))
    np.save(tmp_path / "modes.npy", modes)
    # Two conformations: amplitudes (+250, 0) and (-250, 0) with a little spread.
    frames = np.stack([model.coords + 250 * modes[0], model.coords - 250 * modes[0]])
    np.save(tmp_path / "frames.npy", frames)
    sim = str(tmp_path / "sim")
    assert main(["simulate", "--model", str(tmp_path / "ref.npz"), "--selection", "all", "--frames",
                 str(tmp_path / "frames.npy"), "-o", sim, "-n", "800", "--box", "40", "--apix", "2.5",
                 "--no-ctf", "--seed", "2"]) == 0
    truth = np.genfromtxt(os.path.join(sim, "ground_truth.csv"), delimiter=",", names=True)["frame"].astype(int)
    rng = np.random.default_rng(0)
    features = np.where(truth[:, None] == 0, [250.0, 0.0], [-250.0, 0.0]) + rng.normal(0, 20, (800, 2))
    np.save(tmp_path / "features.npy", features)
    out = str(tmp_path / "land")
    assert main(["landscape", "--features", str(tmp_path / "features.npy"), "-o", out, "--k", "2", "--particles",
                 os.path.join(sim, "particles.star"), "--ctf-mode", "none", "--atoms", str(tmp_path / "ref.npz"),
                 "--modes", str(tmp_path / "modes.npy")]) == 0
    result = np.load(os.path.join(out, "landscape.npz"))
    groups = result["groups"]
    # Group 1 lies at negative PC1 (amplitude -250: frame 1), group 2 at positive PC1 (frame 0).
    pc1_sign = np.sign(result["components"][0, 0])
    expected = np.where(truth == (1 if pc1_sign > 0 else 0), 0, 1)
    assert np.array_equal(groups, expected)
    centre = model.center()
    scores = []
    for g in (1, 2):
        vol, info = read_map(os.path.join(out, "group_%d" % g, "map.mrc"))
        frame = 1 if (g == 1) == (pc1_sign > 0) else 0
        own = gaussian_volume(torch.tensor(frames[frame] - centre), model.weights, 2.5, 40, 2.5)
        other = gaussian_volume(torch.tensor(frames[1 - frame] - centre), model.weights, 2.5, 40, 2.5)
        r_own = resolution_at(fsc(torch.tensor(vol), own), 40, 2.5, 0.5)
        r_other = resolution_at(fsc(torch.tensor(vol), other), 40, 2.5, 0.5)
        scores.append((r_own, r_other))
        assert os.path.exists(os.path.join(out, "group_%d" % g, "centroid.pdb"))
    print("group maps, FSC 0.5 against own / other conformation (A):", scores)
    for r_own, r_other in scores:
        assert r_own < 6.0 and r_own < r_other - 1.0
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert summary["group_sizes"] == [int((groups == 0).sum()), int((groups == 1).sum())]
    assert os.path.exists(os.path.join(out, "animations", "axis_1.pdb"))
