"""HEMNMA elastic 3D-to-2D alignment: per-particle normal-mode amplitudes, angles and shifts.

Reads particles (RELION STAR or cryoSPARC .cs, with CTF), a reference model (.npz or PDB) and its
normal modes (.npy, modes x atoms x 3, unit norm over 3N), and writes <out>/particles.star with
the new poses and extra columns (cryoflexAmplitude1.., cryoflexCost, cryoflexMahalanobis,
cryoflexOutlier), results.npz and summary.json.  Each batch's result is saved in <out>/batches,
so a rerun skips finished batches (resume); with several GPUs (--gpus 0,1) the batches are
shared among one worker process per GPU.  See cryoflex_scipion.engine.hemnma.align for the method.
"""
import argparse
import glob
import os
import subprocess
import sys
import time

import numpy as np
import torch

from ..cli import add_common_args, fail, gpu_ids, select_device
from ..core.runtime import Progress, device_name, host_memory_gb, log, run_batches, write_summary
from ..core.atoms import read_atoms
from ..core.io.mrc import MRCError
from ..core.io.particles import read_particles
from ..core.io.stack import ImageSource
from ..core.io.star import StarError
from ..core.metrics import mahalanobis
from ..hemnma.align import AlignmentSettings, ElasticAligner
from ..hemnma.model import CTF_FLIPPED, CTF_FULL, CTF_NONE, ElasticReference


def add_args(p):
    p.add_argument("--particles", required=True, help="RELION .star or cryoSPARC .cs")
    p.add_argument("--atoms", required=True, help="reference model the modes were computed on (.npz or .pdb)")
    p.add_argument("--selection", default="all", help="ProDy selection for a .pdb reference (default: all)")
    p.add_argument("--modes", required=True, help=".npy of normal modes (modes x atoms x 3)")
    p.add_argument("--mode-list", default=None,
                   help="1-based mode numbers within --modes, e.g. '7-9' (default: all modes in the file)")
    p.add_argument("-o", "--out", required=True)
    p.add_argument("--data-root", default=None)
    p.add_argument("--apix", type=float, default=None, help="override the particles' pixel size")
    p.add_argument("--ctf-mode", default="auto", choices=["auto", CTF_FULL, CTF_FLIPPED, CTF_NONE],
                   help="images raw (full CTF), phase-flipped (|CTF|), or CTF-free/corrected; auto: full (the "
                        "particles must then have CTF parameters)")
    p.add_argument("--size", type=int, default=128, help="working size, at most (default: 128 px)")
    p.add_argument("--search-size", type=int, default=48,
                   help="global search size in px, at most the working size (default: 48; smaller is faster "
                        "but misses more orientations: 32 px on 64-px, SNR 0.3 images left 4%% beyond 10 deg, 48 px none)")
    p.add_argument("--coarse-size", type=int, default=48, help="coarse refinement size; 0: none (default: 48)")
    p.add_argument("--angular-step", type=float, default=10.0, help="global search step in degrees")
    p.add_argument("--max-shift", type=float, default=5.0, help="global search shift range in A")
    p.add_argument("--starts", type=int, default=3, help="orientations refined per particle (default: 3)")
    p.add_argument("--search-levels", type=int, default=3,
                   help="amplitude values per mode tried in the global search (default: 3)")
    p.add_argument("--coarse-iterations", type=int, default=10)
    p.add_argument("--screen-iterations", type=int, default=3,
                   help="coarse iterations given to every start before only the best continues (default: 3)")
    p.add_argument("--fine-iterations", type=int, default=8)
    p.add_argument("--amplitude-bound", type=float, default=None,
                   help="|amplitude| limit (default: 5 A RMS displacement per mode, i.e. 5 sqrt(atoms))")
    p.add_argument("--sigma", type=float, default=1.0, help="Gaussian width of the reference atoms in A")
    p.add_argument("--coarse-model", default="residues", choices=["residues", "full"],
                   help="model for the global search and coarse refinement: one bead per residue (fast), or all "
                        "atoms (default: residues when residues hold several atoms)")
    p.add_argument("--local", action="store_true", help="no global search: refine from the particles' poses")
    p.add_argument("--use-input-poses", action="store_true", help="add the particles' poses as one more start")
    p.add_argument("--outlier-threshold", type=float, default=3.2,
                   help="Mahalanobis distance of the amplitudes above which a particle is flagged (0: none)")
    p.add_argument("--gpus", default=None,
                   help="comma-separated GPU ids, or 'all' (every visible GPU): one worker process per GPU")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # "i/n": one GPU worker of n
    add_common_args(p, batch_size=256)


def _mode_numbers(text, total):
    if not text:
        return list(range(1, total + 1))
    out = []
    for part in text.replace(" ", "").split(","):
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b or a) + 1))
    bad = [m for m in out if m < 1 or m > total]
    if bad:
        fail("--mode-list asks for mode(s) %s but %s holds modes 1-%d" % (bad, "--modes", total))
    return out


def _load(args):
    try:
        table = read_particles(args.particles, apix=args.apix, check_files=True, data_root=args.data_root)
        box, apix = table.uniform()
        model = read_atoms(args.atoms, args.selection)
    except (StarError, FileNotFoundError, MRCError, ValueError, ImportError) as exc:
        fail(str(exc))
    if not os.path.exists(args.modes):
        fail("modes file not found: %s" % args.modes)
    modes = np.load(args.modes)
    if modes.ndim != 3 or modes.shape[2] != 3:
        fail("%s: modes must be an array (modes, atoms, 3), got %s" % (args.modes, modes.shape))
    if modes.shape[1] != len(model):
        fail("the modes have %d atoms but the reference %s has %d (selection %r)"
             % (modes.shape[1], args.atoms, len(model), args.selection))
    numbers = _mode_numbers(args.mode_list, len(modes))
    ctf_mode = CTF_FULL if args.ctf_mode == "auto" else args.ctf_mode
    if ctf_mode != CTF_NONE and not table.has_ctf:
        fail("%s has no CTF parameters: give --ctf-mode none for CTF-free or CTF-corrected images" % args.particles)
    if (args.local or args.use_input_poses) and not table.has_pose:
        fail("%s has no angles: --local and --use-input-poses need existing poses" % args.particles)
    radius = np.sqrt(((model.coords - model.center()) ** 2).sum(1)).max()
    if radius > 0.5 * box * apix:
        fail("the reference reaches %.0f A from its centre but the particle box is %.0f A wide: pixel size or box "
             "inconsistent with the reference" % (radius, box * apix))
    return table, box, apix, model, modes[np.array(numbers) - 1], numbers, ctf_mode


def _residue_groups(model):
    """Bead index per atom, one bead per (chain, residue); None when that would not reduce the
    model at least twofold (C-alpha or pseudoatomic references)."""
    keys = np.char.add(np.char.add(model.chains.astype(str), ":"), model.resids.astype(str))
    _, groups = np.unique(keys, return_inverse=True)
    return groups if groups.max() + 1 <= len(model) // 2 else None


def _batch_path(out, index):
    return os.path.join(out, "batches", "batch_%06d.npz" % index)


def _run_worker(args, worker, n_workers):
    """Align the batches ``worker, worker + n_workers, ...`` that have no result file yet."""
    table, box, apix, model, modes, numbers, ctf_mode = _load(args)
    device = select_device(args.device, args.threads)
    torch.manual_seed(args.seed)
    reference = ElasticReference(model.coords - model.center(), model.weights, modes, args.sigma, device)
    settings = AlignmentSettings(working_size=args.size, search_size=args.search_size, coarse_size=args.coarse_size,
                                 angular_step=args.angular_step, max_shift=args.max_shift, starts=args.starts,
                                 coarse_iterations=args.coarse_iterations, fine_iterations=args.fine_iterations,
                                 screen_iterations=args.screen_iterations,
                                 amplitude_bound=args.amplitude_bound, ctf_mode=ctf_mode, local_only=args.local,
                                 search_levels=args.search_levels)
    groups = _residue_groups(model) if args.coarse_model == "residues" else None
    settings.coarse_groups = groups
    aligner = ElasticAligner(reference, box, apix, settings)
    n = len(table)
    batches = [b for b in range(worker, (n + args.batch_size - 1) // args.batch_size, n_workers)
               if not os.path.exists(_batch_path(args.out, b))]
    todo = sum(min(args.batch_size, n - b * args.batch_size) for b in batches)
    log("worker %d/%d on %s: %d particles in %d batches to align (%d px working, %d templates)"
        % (worker + 1, n_workers, device_name(device), todo, len(batches), aligner.size,
           0 if aligner.bank is None else aligner.bank.templates.shape[0]))
    progress = Progress(todo, "hemnma" if n_workers == 1 else "hemnma[%d]" % worker)
    source = ImageSource(table, args.data_root)
    for b in batches:
        pos = np.arange(b * args.batch_size, min((b + 1) * args.batch_size, n))
        try:
            images = source.read(pos)
        except MRCError as exc:
            fail("%s; finished batches are kept, a rerun resumes after the images are fixed" % exc)
        results = {}

        def work(start, stop):  # a batch too large for the GPU is split, not lost
            sub = pos[start:stop]
            init = (table.euler[sub], table.origin_A[sub]) if (args.local or args.use_input_poses) else (None, None)
            out = aligner.align(images[start:stop], table.ctf.subset(sub) if table.has_ctf else None, *init)
            for key, value in out.items():
                results.setdefault(key, []).append(value)

        run_batches(len(pos), len(pos), work, device, "hemnma")
        merged = {k: np.concatenate(v) for k, v in results.items()}
        path = _batch_path(args.out, b)
        np.savez(path + ".tmp.npz", positions=pos, **merged)
        os.replace(path + ".tmp.npz", path)  # a batch file exists only when complete
        progress.update(len(pos))
    source.close()
    log("stage times (s): %s; peak host memory %.2f GB" % (
        ", ".join("%s %.1f" % kv for kv in aligner.timings.items()), host_memory_gb()[1]))
    return progress.elapsed(), device_name(device)


def main(args):
    os.makedirs(os.path.join(args.out, "batches"), exist_ok=True)
    if args.worker is not None:
        worker, n_workers = (int(v) for v in args.worker.split("/"))
        _run_worker(args, worker, n_workers)
        return 0
    table, box, apix, model, modes, numbers, ctf_mode = _load(args)  # validate before any work
    start = time.time()
    gpus = gpu_ids(args.gpus)
    if gpus:  # worker processes, each seeing only its GPU (also for one GPU: the id may not be the first)
        procs = []
        for i, gpu in enumerate(gpus):
            cmd = [sys.executable, "-m", "cryoflex_scipion.engine"] + args.argv + ["--worker", "%d/%d" % (i, len(gpus))]
            env = dict(os.environ, CUDA_VISIBLE_DEVICES=gpu)
            procs.append(subprocess.Popen(_strip_gpus(cmd), env=env))
        codes = [p.wait() for p in procs]
        if any(codes):
            fail("a GPU worker failed (exit codes %s); rerun to resume the unfinished batches" % codes)
        device = "%d GPUs (%s)" % (len(gpus), ",".join(gpus))
    else:
        _, device = _run_worker(args, 0, 1)
    seconds = time.time() - start

    files = sorted(glob.glob(os.path.join(args.out, "batches", "batch_*.npz")))
    parts = [dict(np.load(f)) for f in files]
    pos = np.concatenate([p["positions"] for p in parts])
    if len(np.unique(pos)) != len(table):
        fail("results cover %d of %d particles: rerun to resume" % (len(np.unique(pos)), len(table)))
    order = np.argsort(pos)
    res = {k: np.concatenate([p[k] for p in parts])[order] for k in ("euler", "origin_A", "amplitudes", "cost")}
    dist = mahalanobis(res["amplitudes"]) if len(table) > modes.shape[0] + 1 else np.zeros(len(table))
    outlier = dist > args.outlier_threshold if args.outlier_threshold > 0 else np.zeros(len(table), bool)
    out_table = table.with_results(res["euler"], res["origin_A"], res["amplitudes"], numbers, args.data_root)
    out_table.extra["cryoflexCost"] = res["cost"]
    out_table.extra["cryoflexMahalanobis"] = dist
    out_table.extra["cryoflexOutlier"] = outlier.astype(np.int64)
    out_table.to_star(os.path.join(args.out, "particles.star"), relative_to=args.out)
    np.savez(os.path.join(args.out, "results.npz"), mode_numbers=np.array(numbers), mahalanobis=dist,
             outlier=outlier, **res)
    # VmHWM, not getrusage's ru_maxrss: the latter keeps the parent's peak across fork + exec.
    peak_gb = host_memory_gb()[1]
    summary = {"command": "hemnma", "n_particles": len(table), "box": box, "apix": apix, "modes": numbers,
               "peak_rss_GB": peak_gb,
               "n_atoms": len(model), "ctf_mode": ctf_mode, "device": device, "seconds": seconds,
               "particles_per_second": len(table) / max(seconds, 1e-9),
               "cost_mean": float(res["cost"].mean()), "outliers": int(outlier.sum()),
               "outlier_threshold": args.outlier_threshold, "amplitude_mean": res["amplitudes"].mean(0),
               "amplitude_std": res["amplitudes"].std(0),
               "files": {"star": "particles.star", "results": "results.npz"}}
    write_summary(os.path.join(args.out, "summary.json"), summary)
    log("done: %d particles in %.1f s (%.1f/s); mean cost %.4f; %d outliers (Mahalanobis > %.1f)"
        % (len(table), seconds, summary["particles_per_second"], summary["cost_mean"], outlier.sum(),
           args.outlier_threshold))
    return 0


def _strip_gpus(cmd):
    out, skip = [], False
    for token in cmd:
        if skip:
            skip = False
            continue
        if token == "--gpus":
            skip = True
            continue
        if token.startswith("--gpus="):
            continue
        out.append(token)
    return out
