"""The trainers' shared core (engine/core/training): the particle cache (prepared images, poses, CTFs and
indices; streamed and cached alike), checkpoint fingerprints (resume or start afresh, atomic writes),
the epoch plan to a time limit (fake clock), curves files, and two processes with gloo."""
import json
import os

import numpy as np
import pytest
import torch

from cryoflex_scipion.engine.core import geometry as g
from cryoflex_scipion.engine.core.ctf import CTFParams, compute_ctf
from cryoflex_scipion.engine.core.fourier import fourier_resize
from cryoflex_scipion.engine.core.io.mrc import write_map
from cryoflex_scipion.engine.core.io.particles import ParticleTable, read_particles
from cryoflex_scipion.engine.core.training import (CheckpointMismatch, EpochPlan, Fingerprint, GlobalNormaliser,
                                                   GraphStep, ParticleCache, PerImageNormaliser, digest,
                                                   load_checkpoint, lr_at, make_adam, normaliser_from_dict,
                                                   restore_rng_state, rng_state, run_distributed, save_checkpoint,
                                                   save_curves, set_lr)
from cryoflex_scipion.engine.core.training import ddp

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N, BOX, APIX, SIZE = 30, 32, 2.0, 24


@pytest.fixture(scope="module")
def particles(tmp_path_factory):
    """30 random images of 32 px at 2 A/px in a stack, with poses and per-particle CTFs, as a STAR file."""
    folder = tmp_path_factory.mktemp("cache")
    rng = np.random.default_rng(0)
    raw = (rng.normal(size=(N, BOX, BOX)) * rng.uniform(0.5, 3, (N, 1, 1)) + rng.normal(size=(N, 1, 1))).astype(
        np.float32)
    write_map(str(folder / "stack.mrcs"), raw, APIX, is_stack=True)
    euler = g.matrix_to_euler(g.random_rotations(N, torch.Generator().manual_seed(0)).numpy())
    ctf = CTFParams(rng.uniform(8000, 20000, N), rng.uniform(8000, 20000, N), rng.uniform(0, 180, N), 300.0, 2.7, 0.1)
    table = ParticleTable(np.full(N, "stack.mrcs"), np.arange(N), np.full(N, APIX), np.full(N, BOX, np.int64), euler,
                          rng.uniform(-4, 4, (N, 2)), ctf)
    table.to_star(str(folder / "particles.star"))
    return str(folder / "particles.star"), raw


def test_cache_prepares_images_and_carries_poses_ctf_and_indices(particles):
    star, raw = particles
    table = read_particles(star)
    cache = ParticleCache(table, SIZE)
    assert (cache.n, cache.box, cache.size, cache.apix) == (N, BOX, SIZE, APIX)
    assert cache.working_apix == pytest.approx(APIX * BOX / SIZE)
    pos = np.array([5, 3, 17, 0, 29])
    batch = cache.batch(pos, "cpu")
    indices, images, poses, ctf = batch
    assert indices.dtype == torch.int64 and indices.tolist() == pos.tolist()
    # images: Fourier crop to the working size, then zero mean and unit std per image
    expected = fourier_resize(torch.as_tensor(raw[pos]), SIZE)
    expected = (expected - expected.mean((-2, -1), keepdim=True)) / expected.std((-2, -1), keepdim=True)
    assert images.dtype == torch.float32 and torch.equal(images, expected)
    # poses of those particles, the origin also as the image shift in working pixels
    assert np.allclose(poses.euler.numpy(), table.euler[pos], atol=1e-4)
    assert np.allclose(poses.rotations.numpy(), g.euler_to_matrix(table.euler[pos]), atol=1e-6)
    assert np.allclose(poses.origin_A.numpy(), table.origin_A[pos], atol=1e-6)
    assert np.allclose(poses.shifts_px.numpy(), -table.origin_A[pos] / cache.working_apix, atol=1e-6)
    # CTF parameters usable by compute_ctf at the working size: the table's CTFs of those particles
    reference = compute_ctf(table.ctf.subset(pos), SIZE, cache.working_apix)
    assert len(ctf) == 5 and ctf.defocus_u.dtype == torch.float64
    assert torch.equal(ctf.images(), reference)
    assert torch.equal(compute_ctf(ctf, SIZE, cache.working_apix, n=len(ctf)), reference)
    assert np.array_equal(ctf.defocus_u.numpy(), table.ctf.defocus_u[pos])


def test_streamed_and_cached_batches_are_identical(particles):
    star, _ = particles
    streamed, cached = ParticleCache(read_particles(star), SIZE), ParticleCache(read_particles(star), SIZE)
    assert streamed.load("cpu", "none") == "none" and streamed.cache is None
    assert cached.load("cpu", "auto") == "device" and cached.cached_on == torch.device("cpu")
    order = np.random.default_rng(1).permutation(N)
    a, b = list(streamed.batches(order, 7, "cpu")), list(cached.batches(order, 7, "cpu"))
    assert [len(x.indices) for x in a] == [7, 7, 7, 7, 2]
    for x, y in zip(a, b):
        assert torch.equal(x.indices, y.indices) and torch.equal(x.images, y.images)
        assert all(torch.equal(p, q) for p, q in zip(x.poses, y.poses))
        assert all(torch.equal(x.ctf.params[k], y.ctf.params[k]) for k in x.ctf.params)
    # chunks given as device tensors (a training loop's order) give the same batches
    chunks = [torch.as_tensor(order[:10]), torch.as_tensor(order[10:])]
    for c, x, y in zip(chunks, streamed.batches_of(chunks, "cpu"), cached.batches_of(chunks, "cpu")):
        assert torch.equal(x.indices, c) and torch.equal(x.images, y.images)
        assert torch.equal(x.images, cached.get(c, "cpu"))


def test_global_normaliser_and_array_source(particles):
    """One scale for every image, from a sample: the std of the sampled images' pixels at the working size;
    images keep their relative intensities.  An array source with explicit poses/CTF gives the same."""
    star, raw = particles
    table = read_particles(star)
    normaliser = GlobalNormaliser(sample_size=12, seed=3)
    cache = ParticleCache(table, SIZE, normaliser=normaliser)
    sample = np.sort(np.random.default_rng(3).choice(N, 12, replace=False))
    resized = fourier_resize(torch.as_tensor(raw[sample]), SIZE).double()
    assert normaliser.fitted and normaliser.offset == 0.0
    assert normaliser.scale == pytest.approx(float(resized.std(unbiased=False)), rel=1e-9)
    images = cache.get(np.arange(N), "cpu")
    assert torch.equal(images, fourier_resize(torch.as_tensor(raw), SIZE) / normaliser.scale)
    # a fitted normaliser is kept (a prediction set is scaled like the training set)
    other = ParticleCache(table.subset(np.arange(4)), SIZE, normaliser=normaliser)
    assert other.normaliser.scale == normaliser.scale
    rebuilt = normaliser_from_dict(json.loads(json.dumps(normaliser.to_dict())))
    assert rebuilt.to_dict() == normaliser.to_dict()
    # array source
    array = ParticleCache(raw, SIZE, normaliser=GlobalNormaliser(sample_size=12, seed=3), euler=table.euler,
                          origin_A=table.origin_A, ctf=table.ctf, apix=APIX)
    assert array.normaliser.scale == pytest.approx(normaliser.scale, rel=1e-6)
    x, y = array.batch(np.arange(6), "cpu"), cache.batch(np.arange(6), "cpu")
    assert torch.allclose(x.images, y.images, atol=1e-5)
    assert all(torch.equal(p, q) for p, q in zip(x.poses, y.poses))
    assert torch.equal(x.ctf.images(), y.ctf.images())
    # per-image normalisation: a gain and an offset change nothing
    per_image = PerImageNormaliser()
    z = torch.randn(3, 8, 8)
    assert torch.allclose(per_image(5 * z + 2), per_image(z), atol=1e-5)


def test_cache_fingerprint(particles):
    star, raw = particles
    table = read_particles(star)
    base = ParticleCache(table, SIZE).fingerprint()
    assert ParticleCache(read_particles(star), SIZE).fingerprint() == base
    changed = read_particles(star)
    changed.ctf.defocus_u = changed.ctf.defocus_u.copy()
    changed.ctf.defocus_u[4] += 1.0
    fp = Fingerprint(inputs=base)
    assert fp.differences(Fingerprint(inputs=ParticleCache(changed, SIZE).fingerprint())) == ["inputs.ctf.defocus_u"]
    assert fp.differences(Fingerprint(inputs=ParticleCache(table, 20).fingerprint())) == ["inputs.size"]
    assert fp.differences(Fingerprint(inputs=ParticleCache(table, SIZE, normaliser=GlobalNormaliser()).fingerprint())) \
        == ["inputs.normaliser.kind", "inputs.normaliser.sample_size", "inputs.normaliser.seed",
            "inputs.normaliser.subtract_mean"]
    a = ParticleCache(raw, SIZE).fingerprint()
    other = raw.copy()
    other[7, 3, 3] += 1e-3
    assert Fingerprint(x=a).differences(Fingerprint(x=ParticleCache(other, SIZE).fingerprint())) == ["x.images"]


def test_digest_and_fingerprint_differences():
    assert digest(100) == digest(100.0) and digest(1) != digest("1") and digest(0.1) != digest(0.10000001)
    assert digest(np.zeros(3, np.float32)) != digest(np.zeros(3, np.float64)) != digest(np.zeros(4, np.float64))
    assert digest({"a": 1, "b": [1, 2]}) == digest({"b": (1, 2), "a": 1}) and digest(None) != digest(0)
    a = Fingerprint(inputs={"labels": np.arange(5)}, network={"width": 4}, training={"lr": 1e-3, "epochs": 3})
    b = Fingerprint(inputs={"labels": np.arange(5)}, network={"width": 4}, training={"lr": 2e-3, "epochs": 3})
    assert a == Fingerprint(inputs={"labels": np.arange(5)}, network={"width": 4}, training={"lr": 1e-3, "epochs": 3})
    assert a.differences(b) == ["training.lr"] and a.differences(b.digests) == ["training.lr"]
    assert a.differences({}) == sorted(a.digests)


def _state(seed):
    torch.manual_seed(seed)
    net = torch.nn.Linear(4, 3)
    opt = make_adam(net.parameters(), 1e-2)
    net(torch.randn(8, 4)).square().sum().backward()
    opt.step()
    return net, opt


def test_checkpoint_resumes_only_with_the_same_fingerprint(tmp_path, capsys):
    path = str(tmp_path / "checkpoint.pt")
    net, opt = _state(0)
    latents = torch.randn(30, 8)
    fp = Fingerprint(inputs={"n": 30}, training={"lr": 1e-2})
    save_checkpoint(path, {"net": net, "optimizer": opt, "latents": latents, "history": [{"epoch": 1, "loss": 0.5}],
                           "plan": {"epoch": 1, "planned_epochs": 7}, "rng": rng_state()}, fp)
    assert os.listdir(tmp_path) == ["checkpoint.pt"]
    # the same fingerprint: everything back as it was
    saved = load_checkpoint(path, Fingerprint(inputs={"n": 30}, training={"lr": 1e-2}))
    assert all(torch.equal(saved["net"][k], v) for k, v in net.state_dict().items())
    fresh, fresh_opt = _state(1)
    fresh_opt.load_state_dict(saved["optimizer"])
    assert torch.equal(fresh_opt.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert torch.equal(saved["latents"], latents) and saved["plan"]["planned_epochs"] == 7
    restore_rng_state(saved["rng"])
    first = (torch.rand(3), np.random.rand())
    restore_rng_state(saved["rng"])
    assert torch.equal(torch.rand(3), first[0]) and np.random.rand() == first[1]
    # other settings: an error on request, else moved aside and None (start from scratch)
    other = Fingerprint(inputs={"n": 30}, training={"lr": 2e-2})
    with pytest.raises(CheckpointMismatch, match=r"other training settings \(differs in: training.lr\)"):
        load_checkpoint(path, other, on_mismatch="error")
    assert os.path.exists(path)
    capsys.readouterr()
    assert load_checkpoint(path, other) is None
    out = capsys.readouterr().out
    assert "was written for other training settings (differs in: training.lr); starting from scratch" in out
    assert not os.path.exists(path) and os.path.exists(path + ".stale")
    assert load_checkpoint(path, other) is None  # nothing left to resume
    # a checkpoint of an older version (no fingerprint) or an unreadable one is not resumed either
    torch.save({"net": {}}, path)
    assert load_checkpoint(path, fp) is None and "without a fingerprint" in capsys.readouterr().out
    with open(path, "wb") as fh:
        fh.write(b"not a checkpoint")
    assert load_checkpoint(path, fp) is None and "unreadable" in capsys.readouterr().out


def test_checkpoint_writes_are_atomic(tmp_path):
    path = str(tmp_path / "checkpoint.pt")
    fp = Fingerprint(training={"lr": 1e-2})
    save_checkpoint(path, {"history": [1, 2]}, fp)
    with pytest.raises(Exception):
        save_checkpoint(path, {"history": [1, 2, 3], "bad": lambda: None}, fp)  # fails while writing
    assert os.listdir(tmp_path) == ["checkpoint.pt"]  # no temporary file left, the old one intact
    assert load_checkpoint(path, fp)["history"] == [1, 2]


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _run_plan(plan, clock, durations, stop_after=None):
    """Epochs of the given durations until the plan ends (or ``stop_after`` epochs); the epochs run."""
    done = 0
    while plan.unfinished():
        plan.begin_epoch()
        clock.now += durations[min(plan.epoch, len(durations) - 1)]
        done += 1
        if plan.end_epoch() or (stop_after and done >= stop_after):
            break
    return done


def test_epoch_plan_fits_the_time_limit(capsys):
    clock = FakeClock()
    plan = EpochPlan(1000, time_limit=100.0, clock=clock)
    assert plan.total == 1000 and plan.state["planned_epochs"] is None
    # first epoch 10 s (start-up), then 3 s: after the second, 2 + int(0.97 * 87 / 3) = 30 epochs
    _run_plan(plan, clock, [10.0, 3.0], stop_after=2)
    assert plan.state["planned_epochs"] == 30 and plan.state["epoch_seconds"] == [3.0]
    assert "time limit 100 s: 30 epochs of 3.00 s planned" in capsys.readouterr().out
    # resumed from the saved state (another process, another clock): the same plan, the time so far kept
    state = json.loads(json.dumps(plan.state))
    clock2 = FakeClock()
    resumed = EpochPlan(1000, time_limit=100.0, state=state, clock=clock2)
    assert resumed.total == 30 and resumed.epoch == 2
    _run_plan(resumed, clock2, [3.0])
    assert resumed.epoch == 30 and resumed.state["planned_epochs"] == 30
    assert resumed.state["elapsed"] == pytest.approx(10 + 29 * 3.0) and resumed.state["elapsed"] <= 100
    # epochs that become slower lower the plan; faster ones never raise it
    clock = FakeClock()
    plan = EpochPlan(1000, time_limit=100.0, clock=clock)
    _run_plan(plan, clock, [1.0, 2.0, 2.0, 2.0, 2.0, 6.0])
    assert plan.epoch == plan.state["planned_epochs"] and plan.state["elapsed"] <= 100.0
    assert plan.epoch < 2 + int(0.97 * 97 / 2)
    clock = FakeClock()
    plan = EpochPlan(1000, time_limit=100.0, clock=clock)
    _run_plan(plan, clock, [1.0, 4.0, 4.0, 1.0])
    assert plan.epoch == 2 + int(0.97 * 95 / 4)
    # an epoch that would end past the limit stops the run, whatever the plan said
    clock = FakeClock()
    plan = EpochPlan(1000, time_limit=100.0, clock=clock)
    assert _run_plan(plan, clock, [1.0, 1.0, 1.0, 60.0]) == 4 and plan.state["planned_epochs"] == 4
    # no limit: the epochs asked for
    clock = FakeClock()
    plan = EpochPlan(5, clock=clock)
    assert _run_plan(plan, clock, [100.0]) == 5 and plan.total == 5


def test_lr_schedule():
    lr = [lr_at(s, 100, 10, 1e-3, 0.01) for s in range(101)]
    assert lr[0] == pytest.approx(1e-4) and lr[9] == pytest.approx(1e-3) and lr[10] == pytest.approx(1e-3)
    assert lr[100] == pytest.approx(1e-5) and lr[55] == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5))
    assert all(a >= b for a, b in zip(lr[10:], lr[11:]))
    net = torch.nn.Linear(2, 2)
    opt = make_adam([{"params": [net.weight]}, {"params": [net.bias], "lr_scale": 10.0}], 1e-3)
    set_lr(opt, 2e-3)
    assert [grp["lr"] for grp in opt.param_groups] == [2e-3, pytest.approx(2e-2)]


def test_graph_step_eager_on_cpu():
    """The generic step (eager on a CPU) is the plain zero_grad / backward of the summed losses / step."""
    torch.manual_seed(0)
    a, b = torch.nn.Linear(3, 1), torch.nn.Linear(3, 1)
    b.load_state_dict(a.state_dict())
    opt_a, opt_b = make_adam(a.parameters(), 1e-2), make_adam(b.parameters(), 1e-2)
    step = GraphStep(lambda x, t: {"l1": (a(x) - t["y"]).abs().mean(), "l2": a(x).square().mean()}, opt_a)
    x, y = torch.randn(5, 3), torch.randn(5, 1)
    for _ in range(3):
        losses = step(x, {"y": y})
        opt_b.zero_grad()
        ((b(x) - y).abs().mean() + b(x).square().mean()).backward()
        opt_b.step()
    assert set(losses) == {"l1", "l2"} and not losses["l1"].requires_grad
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_curves_files(tmp_path):
    prefix = str(tmp_path / "curves")
    history = [{"epoch": 1, "loss": 0.5, "seconds": 1.25}, {"epoch": 2, "loss": 0.25, "val": None, "extra": 3}]
    save_curves(prefix, history, ["epoch", "loss", "val", "seconds"])
    assert open(prefix + ".csv").read() == "epoch,loss,val,seconds\n1,0.5,,1.25\n2,0.25,,\n"
    assert json.load(open(prefix + ".json")) == history
    save_curves(prefix, history)  # every key, in order of appearance
    assert open(prefix + ".csv").read().splitlines()[0] == "epoch,loss,seconds,val,extra"
    assert sorted(os.listdir(tmp_path)) == ["curves.csv", "curves.json"]
    save_curves(None, history)


def _ddp_run(job, device, rank, world):
    """Two processes: the NCCL setting, the threads divided, a broadcast, averaged gradients."""
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1, bias=False)
    model = ddp.wrap_ddp(net, device, world)
    x = torch.full((2, 3), float(rank + 1))
    model(x).sum().backward()
    decided = ddp.broadcast_floats([7.0, float(rank)], world, device)
    ddp.barrier(world)
    with open(os.path.join(job["folder"], "rank%d.json" % rank), "w") as fh:
        json.dump({"nvls": os.environ.get("NCCL_NVLS_ENABLE"), "threads": torch.get_num_threads(),
                   "decided": decided, "grad": net.weight.grad.tolist()}, fh)


def test_two_processes_with_gloo(tmp_path):
    run_distributed(_ddp_run, {"folder": str(tmp_path)}, 2, "cpu")
    out = [json.load(open(tmp_path / ("rank%d.json" % r))) for r in (0, 1)]
    assert all(o["nvls"] == "0" and o["decided"] == [7.0, 0.0] for o in out)
    assert all(o["threads"] <= max(1, (os.cpu_count() or 2) // 2) for o in out)  # the cores divided
    # gradients averaged: inputs 1 and 2 on the two ranks, two rows each -> 2 * 1.5 per weight
    assert out[0]["grad"] == out[1]["grad"] == [[3.0, 3.0, 3.0]]
