"""CryoTRANS building blocks: splatting, the flow, Sinkhorn, the rigidity prior, schedules, resuming."""
import math
import os

import numpy as np
import pytest
import torch

from cryoflex_scipion.engine.cryotrans import sinkhorn
from cryoflex_scipion.engine.cryotrans.density import Level, particles_from_density, prepare_densities, splat
from cryoflex_scipion.engine.cryotrans.flow import Flow
from cryoflex_scipion.engine.cryotrans.inputs import InputError, labels_from_masks
from cryoflex_scipion.engine.cryotrans.morph import Morph, MorphSettings, default_schedule, parse_schedule
from cryoflex_scipion.engine.cryotrans.rigidity import build_mesh
from cryoflex_scipion.engine.core.training.checkpoint import CheckpointMismatch


def _blob(size, centre_zyx, sigma=2.0):
    z, y, x = np.meshgrid(*(np.arange(size),) * 3, indexing="ij")
    cz, cy, cx = centre_zyx
    return np.exp(-((z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma ** 2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_splatting_conserves_mass_inside_and_outside_the_box(dtype):
    gen = torch.Generator().manual_seed(0)
    level = Level(24, 2)
    pos = (torch.rand(5000, 3, generator=gen, dtype=torch.float64) * 1.6 - 0.8).to(dtype)  # some outside
    masses = torch.rand(5000, generator=gen, dtype=torch.float64).to(dtype)
    grid = splat(pos, masses, level)
    assert grid.shape == (12, 12, 12)
    rel = abs(float(grid.double().sum()) - float(masses.double().sum())) / float(masses.double().sum())
    assert rel < 1e-5


def test_particles_at_rest_splat_back_to_the_density():
    dens = _blob(20, (9, 11, 8))
    dens[dens < 0.05] = 0
    for factor in (1, 2):
        level = Level(20, factor)
        pos, masses, index, _ = particles_from_density(dens, level)
        grid = splat(pos, masses, level).numpy()
        from cryoflex_scipion.engine.core.maps import bin_map
        assert np.allclose(grid, bin_map(torch.as_tensor(dens), factor).numpy(), atol=1e-12)
        # positions are voxel (block) centres: index -> position -> index round trip
        assert torch.allclose(level.to_index(pos), index.flip(-1).double(), atol=1e-12)


def test_zero_velocity_is_the_identity():
    flow = Flow(n_fields=2, width=16, depth=3, steps=10).double()
    for f in flow.fields:
        torch.nn.init.zeros_(f.layers[-1].weight)
        torch.nn.init.zeros_(f.layers[-1].bias)
    x = torch.rand(100, 3, dtype=torch.float64) - 0.5
    parts = [(0, 0, 40), (1, 40, 100)]
    assert torch.equal(flow(x, parts), x)
    frames = flow.trajectory(x, parts)
    assert len(frames) == 11 and all(torch.equal(f, x) for f in frames)


def test_gemm_pass_matches_exact_log_sum_exp():
    gen = torch.Generator().manual_seed(1)
    m = 32
    cost = sinkhorn.kernel_cost(m, 1e-3, dtype=torch.float64)
    x = torch.randn(200, m, generator=gen, dtype=torch.float64) * 50
    x[:5] *= 40  # rows spanning more than 600: these go through the exact path
    before = dict(sinkhorn.STATS)
    fast = sinkhorn._lse_gemm(x, cost, sinkhorn._lse_chunked)
    exact = sinkhorn._lse_pass(x, cost)
    assert torch.allclose(fast, exact, rtol=0, atol=1e-9)
    assert sinkhorn.STATS["exact_rows"] - before["exact_rows"] >= 5


def test_sinkhorn_divergence_of_a_shifted_blob_is_the_squared_shift():
    m = 32
    a = torch.as_tensor(_blob(m, (14, 15, 13), sigma=2.5))
    for shift in (3, 6):
        b = torch.as_tensor(_blob(m, (14, 15 + shift, 13), sigma=2.5))
        value = sinkhorn.sinkhorn_divergence(a, b, eps=1e-3, n_iter=30) * m * m  # box units^2 -> px^2
        print("shift %d px: divergence %.3f px^2" % (shift, value))
        assert abs(value - shift ** 2) < 0.02 * shift ** 2


def test_sinkhorn_loss_gradient_points_towards_the_target():
    m = 20
    target = torch.as_tensor(_blob(m, (10, 10, 12)))
    level = Level(m, 1)
    dens = _blob(m, (10, 10, 8))
    dens[dens < 0.05] = 0
    pos, masses, _, _ = particles_from_density(dens, level)
    pos.requires_grad_(True)
    target = target * masses.sum() / target.sum()
    loss = sinkhorn.SinkhornLoss(target, sinkhorn.level_eps(1e-4, m), n_iter=5)
    loss(splat(pos, masses, level)).backward()
    step = -(pos.grad * masses[:, None]).sum(0) / masses.sum()
    cosine = float(step[0] / step.norm())
    print("mean descent direction", step.tolist(), "cosine with +x %.3f" % cosine)
    assert cosine > 0.9  # measured 0.97 (5 Sinkhorn iterations from zero are not converged)


def test_rigidity_energy_vanishes_for_rotations_and_grows_with_strain():
    dens = _blob(16, (8, 8, 8), sigma=2.0)
    dens[dens < 0.1] = 0
    level = Level(16, 1)
    pos, masses, index, _ = particles_from_density(dens, level)
    extra, _, mesh = build_mesh(index.numpy(), level)
    points = torch.cat([pos, level.positions(torch.as_tensor(extra))])
    rot = torch.as_tensor(np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0])
    rot = rot * torch.sign(torch.det(rot))
    assert float(mesh.energy(points @ rot.T + 0.1)) < 1e-20
    # uniform stretch by 1.1: every tetrahedron has A^T A = 1.21 I, energy 3 * 0.21^2
    assert abs(float(mesh.energy(points * 1.1)) - 3 * 0.21 ** 2) < 1e-12
    assert len(mesh) == 6 * len(pos)


def test_schedules():
    stages = default_schedule(96, 1000)
    assert [(s.kind, s.factor, s.iterations) for s in stages] == [("w2", 2, 300), ("w2", 1, 700)]
    assert [s.factor for s in default_schedule(40, 900)] == [1]
    assert [s.factor for s in default_schedule(48, 900)] == [2, 1]
    stages = parse_schedule("4:600,2:300,l2:1:400", 1e-3, 1e-4)
    assert [(s.kind, s.factor, s.iterations, s.lr) for s in stages] == [
        ("w2", 4, 600, 1e-3), ("w2", 2, 300, 1e-3), ("l2", 1, 400, 1e-4)]
    with pytest.raises(ValueError):
        parse_schedule("4-600", 1e-3)


def test_masks_partition_the_density():
    support = np.zeros((8, 8, 8), bool)
    support[2:6, 2:6, 2:6] = True
    m1 = np.zeros((8, 8, 8))
    m1[:, :, :4] = 1
    labels, n, notes = labels_from_masks([("a", m1)], (8, 8, 8), support)
    assert n == 2 and set(np.unique(labels[support])) == {0, 1} and (labels[support][:] >= 0).all()
    assert (labels[2:6, 2:6, 2:4] == 0).all() and (labels[2:6, 2:6, 4:6] == 1).all() and notes
    with pytest.raises(InputError, match="voxels"):
        labels_from_masks([("b", np.ones((6, 8, 8)))], (8, 8, 8), support)
    with pytest.raises(InputError, match="no voxel"):
        labels_from_masks([("c", np.zeros((8, 8, 8)))], (8, 8, 8), support)


def _small_problem():
    a0 = _blob(24, (12, 12, 9), 2.0)
    a1 = _blob(24, (12, 12, 14), 2.5)
    return prepare_densities(a0, a1, 0.05, 0.05)


def test_interrupted_training_resumes_to_the_same_result(tmp_path):
    a0, a1, _ = _small_problem()
    settings = MorphSettings(stages=parse_schedule("2:30,1:20", 1e-3), width=32, rigidity=1.0,
                             checkpoint_every=10, log_every=10)
    full = Morph(a0, a1, settings, dtype=torch.float64, box_length=48.0)
    full.run()
    ckpt = str(tmp_path / "checkpoint.pt")

    class Stop(Exception):
        pass

    def stop_after_stage2_iter10(msg):  # the log of iteration 20 comes after the checkpoint of iteration 10
        if "stage 2/2" in msg and "iteration 20/" in msg:
            raise Stop

    first = Morph(a0, a1, settings, dtype=torch.float64, box_length=48.0)
    with pytest.raises(Stop):
        first.run(checkpoint=ckpt, log=stop_after_stage2_iter10)
    messages = []
    resumed = Morph(a0, a1, settings, dtype=torch.float64, box_length=48.0)
    resumed.run(checkpoint=ckpt, log=messages.append)
    assert any("resuming" in m and "stage 2" in m and "iteration 10" in m for m in messages)
    for p, q in zip(full.flow.parameters(), resumed.flow.parameters()):
        assert torch.allclose(p, q, atol=1e-10)
    rows = [(h["stage"], h["iteration"]) for h in resumed.history]
    assert rows == [(h["stage"], h["iteration"]) for h in full.history[:len(rows)]] and len(set(rows)) == len(rows)
    # another job's checkpoint (other settings, or other maps) is refused, or with 'restart' moved aside
    other = MorphSettings(stages=parse_schedule("2:30,1:20", 1e-3), width=32, rigidity=2.0)
    with pytest.raises(CheckpointMismatch, match="training.rigidity"):
        Morph(a0, a1, other, dtype=torch.float64, box_length=48.0).run(checkpoint=ckpt)
    with pytest.raises(CheckpointMismatch, match="inputs.a1"):
        Morph(a0, a1[::-1].copy(), settings, dtype=torch.float64, box_length=48.0).run(checkpoint=ckpt)
    fresh = Morph(a0, a1, other, dtype=torch.float64, box_length=48.0)
    fresh.run(checkpoint=ckpt, log=messages.append, on_mismatch="restart")
    assert os.path.exists(ckpt + ".stale") and fresh.history[0]["iteration"] == 1


def test_blob_moves_to_target_with_constant_mass_and_monotonic_centre():
    a0, a1, _ = _small_problem()
    settings = MorphSettings(stages=parse_schedule("2:150,1:100", 1e-3), width=32, log_every=50)
    morph = Morph(a0, a1, settings, dtype=torch.float64, box_length=48.0)
    morph.run(log=lambda m: None)
    maps, start, end, masses, _ = morph.trajectory()
    total = float(masses.sum())
    x = np.arange(24)
    centres = []
    for frame in maps:
        assert abs(float(frame.sum()) - total) < 1e-9 * total
        centres.append(float((frame.sum(dim=(0, 1)) * torch.as_tensor(x)).sum() / frame.sum()))
    target_centre = float((torch.as_tensor(a1).sum(dim=(0, 1)) * torch.as_tensor(x)).sum() / a1.sum())
    print("centre x along the trajectory:", ["%.2f" % c for c in centres], "target %.2f" % target_centre)
    assert all(b > a for a, b in zip(centres, centres[1:]))
    assert abs(centres[-1] - target_centre) < 0.25 and abs(centres[0] - 9.0) < 1e-6
    assert math.isclose(float(maps[0].sum()), total, rel_tol=1e-12)


def test_loss_with_wide_potentials_falls_back_to_exact_passes(monkeypatch):
    # Rows of potentials spanning more than the float64 matrix-product pass can take make the
    # evaluation run again with log-sum-exp passes.  Real runs never reached the 600 limit, so
    # the limit is lowered here to exercise the fallback.
    m = 24
    a = torch.as_tensor(_blob(m, (4, 4, 4), 1.0))
    b = torch.as_tensor(_blob(m, (19, 19, 19), 1.0))
    b = b * a.sum() / b.sum()
    eps = sinkhorn.level_eps(1e-4, m)
    monkeypatch.setenv("CRYOFLEX_SINKHORN_GEMM", "0")
    exact = sinkhorn.SinkhornLoss(b, eps, 5)(a)
    monkeypatch.setenv("CRYOFLEX_SINKHORN_GEMM", "1")
    monkeypatch.setattr(sinkhorn, "_RANGE_LIMIT", 5.0)
    before = sinkhorn.STATS["exact_rows"]
    fallback = sinkhorn.SinkhornLoss(b, eps, 5)(a)
    assert sinkhorn.STATS["exact_rows"] > before
    assert abs(float(fallback) - float(exact)) < 1e-12 * abs(float(exact))
    monkeypatch.setattr(sinkhorn, "_RANGE_LIMIT", 600.0)
    fast = sinkhorn.SinkhornLoss(b, eps, 5)(a)
    assert abs(float(fast) - float(exact)) < 1e-9 * abs(float(exact))
