"""Engine core throughput: particle simulation and reconstruction (CPU or GPU).

    python benchmarks/bench_core.py --device cuda --out benchmarks/results/core_cuda.json
    python benchmarks/bench_core.py --device cpu --n-sim 200 --n-rec 500

Simulation: particles/s at 128 px (1.5 A/px) with CTF and noise (SNR 0.1) for the 1,656-atom AdK
model and a 17,000-atom model (AdK copies on a grid), measured two ways: compute only (projection,
CTF, noise; synchronised), and the end-to-end `simulate` command (including the .mrcs/STAR writes).
Reconstruction: particles/s into a 128^3 map (pad 2), compute only (images already on the device)
and the end-to-end `reconstruct` command (reading the stack from disk).  Needs only torch, numpy and
mrcfile (no ProDy: the model is benchmarks/data/adk_open_heavy.npz).
"""
import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from _common import report  # noqa: E402
from cryoflex_scipion.engine.__main__ import main as engine_main  # noqa: E402
from cryoflex_scipion.engine.core import geometry as g  # noqa: E402
from cryoflex_scipion.engine.core.atoms import AtomModel, read_atoms  # noqa: E402
from cryoflex_scipion.engine.core.reconstruction import Backprojector  # noqa: E402
from cryoflex_scipion.engine.core.simulation import (Conformations, SimulationSettings, add_noise,  # noqa: E402
                                                      render_batch, sample_parameters)

BOX, APIX = 128, 1.5


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def big_model(adk, n_atoms=17000):
    """AdK copies 46 A apart on a 3 x 2 x 2 grid, cut to ``n_atoms``."""
    coords = adk.coords - adk.center()
    copies = []
    for ix in (-46, 0, 46):
        for iy in (-23, 23):
            for iz in (-23, 23):
                copies.append(coords + np.array([ix, iy, iz], dtype=float))
    c = np.concatenate(copies)[:n_atoms]
    reps = lambda a: np.concatenate([a] * 12)[:n_atoms]  # noqa: E731
    return AtomModel(c, reps(adk.elements), reps(adk.names), reps(adk.resnames), reps(adk.resids),
                     reps(adk.chains), reps(adk.bfactors))


def bench_simulation_compute(model, n, batch, device):
    conf = Conformations(model.coords, model.weights, center=model.center())
    settings = SimulationSettings(n_particles=n, size=BOX, apix=APIX, snr=0.1, max_shift=5.0, seed=0)
    params = sample_parameters(settings, conf)
    gen = torch.Generator(device=device).manual_seed(0)
    warm = np.arange(min(batch, n))
    add_noise(*render_batch(conf, settings, params, warm, device), 0.1, 0.5, gen)  # warm-up
    _sync(device)
    start = time.perf_counter()
    done = 0
    while done < n:
        idx = np.arange(done, min(done + batch, n))
        images, _, _ = add_noise(*render_batch(conf, settings, params, idx, device), 0.1, 0.5, gen)
        done += len(idx)
    _sync(device)
    return n / (time.perf_counter() - start)


def bench_reconstruction_compute(n, batch, device):
    gen = torch.Generator().manual_seed(0)
    rots = g.random_rotations(batch, gen).float().to(device)
    images = torch.randn(batch, BOX, BOX, generator=gen).to(device)
    shifts = torch.randn(batch, 2, generator=gen).to(device)
    from cryoflex_scipion.engine.core.ctf import CTFParams
    du = np.random.default_rng(0).uniform(10000, 25000, batch)
    ctf = CTFParams(du, du - 100, 30.0)
    bp = Backprojector(BOX, APIX, device=device)
    halves = torch.arange(batch) % 2
    bp.insert(images, rots, shifts, ctf, halves)  # warm-up
    _sync(device)
    start = time.perf_counter()
    done = 0
    while done < n:
        bp.insert(images, rots, shifts, ctf, halves)
        done += batch
    _sync(device)
    rate = done / (time.perf_counter() - start)
    start = time.perf_counter()
    bp.reconstruct()
    _sync(device)
    return rate, time.perf_counter() - start


def run_command(args):
    start = time.perf_counter()
    assert engine_main(args) == 0
    return time.perf_counter() - start


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--n-sim", type=int, default=None, help="particles per simulation benchmark")
    p.add_argument("--n-rec", type=int, default=None, help="particles per reconstruction benchmark")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    n_sim = args.n_sim or (20000 if gpu else 200)
    n_rec = args.n_rec or (20000 if gpu else 400)
    adk = read_atoms(os.path.join(HERE, "data", "adk_open_heavy.npz"))
    models = {"adk_1656_atoms": adk, "grid_17000_atoms": big_model(adk)}
    result = {"benchmark": "engine core", "date": time.strftime("%Y-%m-%d %H:%M"),
              "device": torch.cuda.get_device_name(device) if gpu else "cpu: %s, %d threads"
              % (platform.processor() or platform.machine(), torch.get_num_threads()),
              "torch": torch.__version__, "numpy": np.__version__, "python": sys.version.split()[0],
              "box": BOX, "apix": APIX, "simulation": {}, "reconstruction": {}}
    tmp = tempfile.mkdtemp(prefix="cryoflex-bench-")
    for name, model in models.items():
        batch = (512 if len(model) < 5000 else 128) if gpu else 32
        rate = bench_simulation_compute(model, n_sim, batch, device)
        npz = os.path.join(tmp, name + ".npz")
        model.save(npz)
        out = os.path.join(tmp, "sim_" + name)
        seconds = run_command(["simulate", "--model", npz, "--selection", "all", "-o", out, "-n", str(n_sim),
                               "--box", str(BOX), "--apix", str(APIX), "--snr", "0.1", "--max-shift", "5",
                               "--device", args.device, "--batch-size", str(batch)])
        summary = json.load(open(os.path.join(out, "summary.json")))
        result["simulation"][name] = {"atoms": len(model), "particles": n_sim, "batch": batch,
                                      "compute_particles_per_s": rate,
                                      "command_particles_per_s": summary["particles_per_second"],
                                      "command_wall_s": seconds}
        print("simulate %-18s %6d atoms: %9.1f particles/s compute, %9.1f particles/s command"
              % (name, len(model), rate, summary["particles_per_second"]), flush=True)
    batch = 256 if gpu else 32
    rate, finalize = bench_reconstruction_compute(n_rec, batch, device)
    star = os.path.join(tmp, "sim_adk_1656_atoms", "particles.star")
    out = os.path.join(tmp, "rec")
    seconds = run_command(["reconstruct", "--particles", star, "-o", out, "--device", args.device,
                           "--batch-size", str(batch)])
    summary = json.load(open(os.path.join(out, "summary.json")))
    result["reconstruction"] = {"map": "%d^3, pad 2" % BOX, "batch": batch, "particles": n_rec,
                                "compute_particles_per_s": rate, "finalize_s": finalize,
                                "command_particles": n_sim,
                                "command_particles_per_s": summary["particles_per_second"],
                                "command_wall_s": seconds}
    print("reconstruct 128^3: %9.1f particles/s compute (finalise %.2f s), %9.1f particles/s command"
          % (rate, finalize, summary["particles_per_second"]), flush=True)
    report(result, args.out)


if __name__ == "__main__":
    main()
