"""HEMNMA accuracy and throughput on the DeepHEMNMA paper's synthetic AdK experiment.

    python benchmarks/bench_hemnma.py --n 2000 --device cuda --out benchmarks/results/hemnma_h200.json
    python benchmarks/bench_hemnma.py --n 40 --device cpu --out benchmarks/results/hemnma_cpu.json

Dataset (Hamitouche & Jonic 2022, synthetic experiment):
- reference 4AKE chain A, heavy atoms (1,656), modes 7-9 of its elastic network (RTB, 10-residue
  blocks, 8 A cutoff), unit norm over 3N;
- amplitudes q7 = -200 r, q8 = 200 sin(pi r), q9 = 200 cos(pi r), r ~ U(0, 1);
- uniform random orientations, shifts uniform in +/-5 px (at 256 px);
- CTF 200 kV, Cs 2 mm, defocus 0.5 um underfocus (amplitude contrast 0.1), SNR 0.1 with half of
  the noise variance before the CTF and half after;
- 256 px at 0.325 A/px, then phase-flipped and Fourier-cropped to 128 px at 0.65 A/px.
Model mismatch: the images are made with atom widths drawn in [0.8, 1.4] A per atom, the
alignment uses 1.0 A for every atom.  The 17,000-atom reference (12 AdK copies) does not fit
that box: its particles are made at 0.8 A/px and cropped to 128 px at 1.6 A/px.

The aligner runs through the engine command (`hemnma`, stack read from disk, STAR written), and
its results are compared with the ground truth: mean absolute amplitude error per mode, angular
distance, shift error in x and y (A), and the amplitude error as atomic RMSD (|dq| / sqrt(atoms)).
With --atoms-17k, a 17,000-atom reference (12 AdK copies) is aligned too, for throughput.
"""
import argparse
import json
import os
import resource
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from _common import report  # noqa: E402
from cryoflex_scipion.engine.__main__ import main as engine_main  # noqa: E402
from cryoflex_scipion.engine.core import geometry as g  # noqa: E402
from cryoflex_scipion.engine.core.atoms import AtomModel, deform, read_atoms  # noqa: E402
from cryoflex_scipion.engine.core.ctf import CTFParams, compute_ctf, phase_flip  # noqa: E402
from cryoflex_scipion.engine.core.fourier import fourier_resize  # noqa: E402
from cryoflex_scipion.engine.core.io.mrc import StackWriter  # noqa: E402
from cryoflex_scipion.engine.core.io.particles import ParticleTable  # noqa: E402
from cryoflex_scipion.engine.core.projection import project_gaussians  # noqa: E402
from cryoflex_scipion.engine.core.simulation import add_noise  # noqa: E402
from cryoflex_scipion.engine.nma.elastic import compute_modes, rtb_blocks  # noqa: E402

PAPER = {"amplitude_mae": [5.7, 6.2, 7.8], "amplitude_mae_mean": 6.6, "angle_mean": 1.0, "angle_std": 0.9,
         "shift_x": 0.2, "shift_y": 0.2}


def make_dataset(model, modes, n, folder, device, seed=0, batch=250, apix_big=0.325, out_size=128):
    """Simulate at 256 px (``apix_big``), phase-flip and crop to ``out_size`` (128 px: 2 x ``apix_big``); see
    the module docstring.  Returns the ground truth (with the per-atom widths used)."""
    apix = apix_big * 256 / out_size
    rng = np.random.default_rng(seed)
    r = rng.uniform(0, 1, n)
    amps = np.stack([-200 * r, 200 * np.sin(np.pi * r), 200 * np.cos(np.pi * r)], -1)
    euler = g.matrix_to_euler(g.random_rotations(n, torch.Generator().manual_seed(seed)).numpy())
    origin_big = rng.uniform(-5, 5, (n, 2)) * apix_big          # A, +/-5 px at 256 px
    sigma_atoms = torch.as_tensor(rng.uniform(0.8, 1.4, len(model)), device=device, dtype=torch.float32)
    ctf = CTFParams(defocus_u=np.full(n, 5000.0), defocus_v=np.full(n, 5000.0), defocus_angle=0.0,
                    voltage=200.0, cs=2.0, amplitude_contrast=0.1)
    coords = torch.as_tensor(model.coords - model.center(), device=device, dtype=torch.float32)
    vecs = torch.as_tensor(modes, device=device, dtype=torch.float32)
    w = torch.as_tensor(model.weights, device=device, dtype=torch.float32)
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    os.makedirs(folder, exist_ok=True)
    measured = []
    with StackWriter(os.path.join(folder, "particles.mrcs"), n, out_size, apix) as writer:
        for s in range(0, n, batch):
            idx = np.arange(s, min(s + batch, n))
            rot = torch.as_tensor(g.euler_to_matrix(euler[idx]), device=device, dtype=torch.float32)
            shift = torch.as_tensor(-origin_big[idx] / apix_big, device=device, dtype=torch.float32)
            xyz = deform(coords, vecs, torch.as_tensor(amps[idx], device=device, dtype=torch.float32))
            proj = project_gaussians(xyz, w, sigma_atoms, rot, 256, apix_big, shifts_px=shift)
            c = compute_ctf(ctf.subset(idx), 256, apix_big, n=len(idx), device=device)
            noisy, _, snr = add_noise(proj, c, 0.1, 0.5, gen)
            measured.append(snr.cpu().numpy())
            small = fourier_resize(phase_flip(noisy, c), out_size)
            writer.write(small.cpu().numpy())
    table = ParticleTable(np.full(n, "particles.mrcs"), np.arange(n), np.full(n, apix), np.full(n, out_size),
                          np.zeros((n, 3)), np.zeros((n, 2)), ctf, np.ones(n, dtype=np.int64), base_dir=folder)
    table.to_star(os.path.join(folder, "particles.star"))
    return {"euler": euler, "origin_A": origin_big, "amplitudes": amps, "snr": float(np.concatenate(measured).mean()),
            "sigma_atoms": sigma_atoms.cpu().numpy(), "ctf": ctf}


def errors(truth, result, n_atoms):
    ang = g.angular_distance(g.euler_to_matrix(result["euler"]), g.euler_to_matrix(truth["euler"]))
    amp = np.abs(result["amplitudes"] - truth["amplitudes"])
    shift = np.abs(result["origin_A"] - truth["origin_A"])
    rmsd = np.linalg.norm(result["amplitudes"] - truth["amplitudes"], axis=1) / np.sqrt(n_atoms)
    return {"amplitude_mae": amp.mean(0).tolist(), "amplitude_mae_mean": float(amp.mean()),
            "amplitude_error_rmsd_A": float(rmsd.mean()),
            "angle_mean": float(ang.mean()), "angle_std": float(ang.std()), "angle_median": float(np.median(ang)),
            "angle_over_10deg_fraction": float((ang > 10).mean()),
            "shift_x": float(shift[:, 0].mean()), "shift_y": float(shift[:, 1].mean()),
            "baseline_zero_amplitude_mae": float(np.abs(truth["amplitudes"]).mean())}


def run_alignment(folder, atoms_npz, modes_npy, device, batch, extra=()):
    out = os.path.join(folder, "hemnma")
    start = time.perf_counter()
    code = engine_main(["hemnma", "--particles", os.path.join(folder, "particles.star"), "--atoms", atoms_npz,
                        "--modes", modes_npy, "--ctf-mode", "phase-flipped", "-o", out, "--device", device,
                        "--batch-size", str(batch)] + list(extra))
    assert code == 0
    seconds = time.perf_counter() - start
    with np.load(os.path.join(out, "results.npz")) as r:
        result = {k: r[k] for k in ("euler", "origin_A", "amplitudes", "cost", "fit_quality", "poor_fit")}
    summary = json.load(open(os.path.join(out, "summary.json")))
    return result, seconds, summary


def big_model(adk, n_atoms=17000):
    coords = adk.coords - adk.center()
    offsets = [np.array([i, j, k]) * 46.0 for i in (-1, 0, 1) for j in (-0.5, 0.5) for k in (-0.5, 0.5)]
    c = np.concatenate([coords + o for o in offsets])[:n_atoms]
    rep = lambda a: np.concatenate([a] * 12)[:n_atoms]  # noqa: E731
    chains = np.concatenate([np.full(len(adk), "C%d" % i) for i in range(12)])[:n_atoms]
    return AtomModel(c, rep(adk.elements), rep(adk.names), rep(adk.resnames), rep(adk.resids), chains,
                     rep(adk.bfactors))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--atoms-17k", type=int, default=0, help="also align this many particles on a 17,000-atom model")
    p.add_argument("--stream", type=int, default=0,
                   help="also align this many particles in a subprocess, reporting its peak memory (streaming)")
    p.add_argument("--engine-args", default="", help="extra arguments for the hemnma command")
    p.add_argument("--variants", nargs="*", default=[],
                   help="more engine-argument sets to time on the same data (accuracy and speed each)")
    p.add_argument("--make-dataset", default=None, metavar="DIR",
                   help="only write --n particles, ref.npz and modes.npy to DIR (for the profile scripts)")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    device = torch.device(args.device)
    tmp = args.make_dataset or tempfile.mkdtemp(prefix="cryoflex-hemnma-")
    model = read_atoms(os.path.join(HERE, "data", "4akeA_heavy.npz"))
    modes = compute_modes(model.coords, 9, "RTB", 8.0, blocks=rtb_blocks(model.chains, model.resids, 10)).vectors[6:9]
    atoms_npz, modes_npy = os.path.join(tmp, "ref.npz"), os.path.join(tmp, "modes.npy")
    if args.make_dataset:
        model.save(atoms_npz)
        np.save(modes_npy, modes)
        make_dataset(model, modes, args.n, tmp, device, batch=1000)
        return
    model.save(atoms_npz)
    np.save(modes_npy, modes)
    t = time.perf_counter()
    truth = make_dataset(model, modes, args.n, tmp, device)
    sim_s = time.perf_counter() - t
    result, seconds, summary = run_alignment(tmp, atoms_npz, modes_npy, args.device, args.batch_size,
                                             args.engine_args.split())
    err = errors(truth, result, len(model))
    out = {"benchmark": "hemnma (DeepHEMNMA synthetic AdK)", "date": time.strftime("%Y-%m-%d %H:%M"),
           "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (%d threads)"
           % torch.get_num_threads(), "torch": torch.__version__, "n_particles": args.n, "atoms": len(model),
           "modes": [7, 8, 9], "snr_measured": truth["snr"], "simulation_s": sim_s, "alignment_wall_s": seconds,
           "particles_per_second": args.n / seconds, "engine_summary_rate": summary["particles_per_second"],
           "errors": err, "paper_hemnma": PAPER, "peak_rss_GB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
           "mean_cost": float(result["cost"].mean()), "fit_quality_median": float(np.nanmedian(result["fit_quality"])),
           "poor_fit_pct": float(100 * result["poor_fit"].mean())}
    print("fit quality median %.3f, %.1f %% of particles flagged as poorly fitted (in-span motion: should be few)"
          % (out["fit_quality_median"], out["poor_fit_pct"]), flush=True)
    print("AdK %d particles: %.1f particles/s; amplitude MAE %s (paper %s); angle %.2f +/- %.2f deg (paper 1.0 +/- 0.9); "
          "shift %.3f/%.3f A (paper 0.2); RMSD of amplitude error %.3f A"
          % (args.n, out["particles_per_second"], np.round(err["amplitude_mae"], 2), PAPER["amplitude_mae"],
             err["angle_mean"], err["angle_std"], err["shift_x"], err["shift_y"], err["amplitude_error_rmsd_A"]),
          flush=True)
    out["engine_args"] = args.engine_args
    out["variants"] = []
    for variant in args.variants:
        import shutil
        shutil.rmtree(os.path.join(tmp, "hemnma"), ignore_errors=True)
        r, s, _ = run_alignment(tmp, atoms_npz, modes_npy, args.device, args.batch_size, variant.split())
        e = errors(truth, r, len(model))
        out["variants"].append({"engine_args": variant, "particles_per_second": args.n / s, "errors": e})
        print("variant [%s]: %.1f particles/s; amplitude MAE %s; angle %.2f +/- %.2f; shift %.3f/%.3f; >10deg %.4f"
              % (variant, args.n / s, np.round(e["amplitude_mae"], 2), e["angle_mean"], e["angle_std"], e["shift_x"],
                 e["shift_y"], e["angle_over_10deg_fraction"]), flush=True)
    if args.atoms_17k:
        big = big_model(model)
        big_modes = compute_modes(big.coords, 9, "RTB", 8.0, blocks=rtb_blocks(big.chains, big.resids, 10)).vectors[6:9]
        folder = os.path.join(tmp, "big")
        # 12 AdK copies span about 170 A: 256 px at 0.8 A/px, cropped to 128 px at 1.6 A/px.
        big_truth = make_dataset(big, big_modes, args.atoms_17k, folder, device, seed=3, apix_big=0.8)
        big.save(os.path.join(folder, "ref.npz"))
        np.save(os.path.join(folder, "modes.npy"), big_modes)
        r, s, _ = run_alignment(folder, os.path.join(folder, "ref.npz"), os.path.join(folder, "modes.npy"),
                                args.device, max(16, args.batch_size // 4))
        big_err = errors(big_truth, r, len(big))
        out["atoms_17000"] = {"atoms": len(big), "n_particles": args.atoms_17k, "alignment_wall_s": s,
                              "particles_per_second": args.atoms_17k / s, "errors": big_err}
        print("17,000 atoms, %d particles: %.1f particles/s; angle %.2f deg" % (args.atoms_17k, args.atoms_17k / s,
                                                                                 big_err["angle_mean"]), flush=True)
    if args.stream:
        out["streaming"] = stream_run(model, modes, args.stream, os.path.join(tmp, "stream"), device, args)
        print("streaming %d particles: %.1f particles/s, peak RSS of the alignment process %.2f GB"
              % (args.stream, out["streaming"]["particles_per_second"], out["streaming"]["peak_rss_GB"]), flush=True)
    report(out, args.out)


def stream_run(model, modes, n, folder, device, args):
    """Align ``n`` particles in a child process (its peak RSS shows the memory bound of streaming)."""
    import subprocess
    truth = make_dataset(model, modes, n, folder, device, seed=7, batch=1000)
    model.save(os.path.join(folder, "ref.npz"))
    np.save(os.path.join(folder, "modes.npy"), modes)
    cmd = [sys.executable, "-m", "cryoflex_scipion.engine", "hemnma", "--particles",
           os.path.join(folder, "particles.star"), "--atoms", os.path.join(folder, "ref.npz"), "--modes",
           os.path.join(folder, "modes.npy"), "--ctf-mode", "phase-flipped", "-o", os.path.join(folder, "out"),
           "--device", args.device, "--batch-size", str(args.batch_size)] + args.engine_args.split()
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    engine = json.load(open(os.path.join(folder, "out", "summary.json")))
    with np.load(os.path.join(folder, "out", "results.npz")) as r:
        result = {k: r[k] for k in ("euler", "origin_A", "amplitudes", "cost")}
    err = errors(truth, result, len(model))
    return {"n_particles": n, "wall_s": seconds, "particles_per_second": n / seconds,
            "peak_rss_GB": engine["peak_rss_GB"],
            "peak_rss_descendants_GB": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0 ** 2,
            "stack_GB": n * 128 * 128 * 4 / 1e9, "errors": err}


if __name__ == "__main__":
    main()
