"""HEMNMA elastic 3D-to-2D alignment: per-particle normal-mode amplitudes, angles and shifts.

Reads particles (RELION STAR or cryoSPARC .cs, with CTF), a reference model (.npz or PDB) and its
normal modes (.npy, modes x atoms x 3, unit norm over 3N), and writes <out>/particles.star with
the new poses and extra columns (cryoflexAmplitude1.., cryoflexCost, cryoflexFitQuality, cryoflexPoorFit,
cryoflexMahalanobis, cryoflexOutlier), results.npz and summary.json.  The fit quality (correlation against
the one a perfect model would reach on the image) flags particles whose conformation the modes do not explain;
--other-references adds other conformations to align against (cryoflexReference: the one that fitted best).
Each batch's result is saved in <out>/batches, so a rerun of the same job skips finished batches
(resume; batches of another job, with other particles, modes or settings, are discarded); with several
GPUs (--gpus 0,1) the batches are shared among one worker process per GPU.  See
cryoflex_scipion.engine.hemnma.align for the method.
"""
import argparse
import os
import subprocess
import sys
import time

import numpy as np

from ..cli import add_amplitude_contrast_arg, add_common_args, add_overwrite_arg, fail, gpu_ids, select_device
from ..core.runtime import EngineInputError, host_memory_gb, log, write_summary
from ..hemnma import outputs
from ..hemnma.align import AlignmentSettings
from ..hemnma.pipeline import (CTF_MODES, align_batches, fingerprint, load_inputs, merge_results, prepare_job,
                               residue_groups)
from ..hemnma.quality import POOR_FIT, POOR_FIT_WARNING


def _nan_median(values):
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else float("nan")


def add_args(p):
    p.add_argument("--particles", required=True, help="RELION .star or cryoSPARC .cs")
    p.add_argument("--atoms", required=True, help="reference model the modes were computed on (.npz or .pdb)")
    p.add_argument("--selection", default="all", help="ProDy selection for a .pdb reference (default: all)")
    p.add_argument("--modes", required=True, help=".npy of normal modes (modes x atoms x 3)")
    p.add_argument("--mode-list", default=None,
                   help="1-based mode numbers within --modes, e.g. '7-9' (default: all modes in the file)")
    p.add_argument("-o", "--out", required=True)
    p.add_argument("--data-root", default=None)
    add_amplitude_contrast_arg(p)
    p.add_argument("--apix", type=float, default=None, help="override the particles' pixel size")
    p.add_argument("--ctf-mode", default="auto", choices=list(CTF_MODES),
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
                   help="amplitude values per mode tried in the global search (default: 3; an even number gets one "
                        "more, so that the undeformed reference is among them; beyond 81 combinations, each mode "
                        "alone)")
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
    p.add_argument("--other-references", nargs="+", default=[], metavar="FILE",
                   help="other conformations of the reference's atoms (.pdb/.cif/.npz, same atoms in the same order, "
                        "e.g. the other end state): every particle is also aligned against them and against "
                        "--intermediates linear interpolations, along the reference's modes, and the best fit wins. "
                        "Use it when the particles move further than the modes reach (see the fit quality); the "
                        "amplitudes stay in the reference's modes (default: none)")
    p.add_argument("--intermediates", type=int, default=1,
                   help="linear interpolations between consecutive conformations with --other-references "
                        "(default: 1; each conformation costs one more alignment)")
    p.add_argument("--local", action="store_true", help="no global search: refine from the particles' poses")
    p.add_argument("--use-input-poses", action="store_true", help="add the particles' poses as one more start")
    p.add_argument("--outlier-threshold", type=float, default=3.2,
                   help="Mahalanobis distance of the amplitudes above which a particle is flagged (0: none)")
    p.add_argument("--gpus", default=None,
                   help="comma-separated GPU ids, or 'all' (every visible GPU): one worker process per GPU")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # "i/n": one GPU worker of n
    add_overwrite_arg(p)
    add_common_args(p, batch_size=256)


def _inputs(args):
    try:
        return load_inputs(args.particles, args.atoms, args.modes, args.mode_list, args.selection, args.apix,
                           args.data_root, args.ctf_mode, need_poses=args.local or args.use_input_poses,
                           amplitude_contrast=args.amplitude_contrast, other_references=args.other_references,
                           intermediates=args.intermediates)
    except EngineInputError as exc:
        fail(str(exc))


def _settings(args, inputs):
    settings = AlignmentSettings(working_size=args.size, search_size=args.search_size, coarse_size=args.coarse_size,
                                 angular_step=args.angular_step, max_shift=args.max_shift, starts=args.starts,
                                 coarse_iterations=args.coarse_iterations, fine_iterations=args.fine_iterations,
                                 screen_iterations=args.screen_iterations,
                                 amplitude_bound=args.amplitude_bound, ctf_mode=inputs.ctf_mode, local_only=args.local,
                                 search_levels=args.search_levels)
    settings.coarse_groups = residue_groups(inputs.model) if args.coarse_model == "residues" else None
    return settings


def _align(args, inputs, settings, worker=0, n_workers=1):
    device = select_device(args.device, args.threads)
    try:
        return align_batches(inputs, settings, args.out, device, args.batch_size, args.sigma, args.seed,
                             args.data_root, args.local or args.use_input_poses, worker, n_workers)
    except EngineInputError as exc:
        fail(str(exc))


def main(args):
    inputs = _inputs(args)  # validate before any work
    settings = _settings(args, inputs)
    gpus = gpu_ids(args.gpus)
    if args.worker is not None:
        worker, n_workers = (int(v) for v in args.worker.split("/"))
        _align(args, inputs, settings, worker, n_workers)
        return 0
    job = fingerprint(inputs, settings, args.batch_size, args.sigma, args.seed, args.local, args.use_input_poses,
                      args.data_root)
    os.makedirs(args.out, exist_ok=True)
    kept = prepare_job(args.out, job, args.overwrite)
    n = len(inputs.table)
    done_before = sum(min(args.batch_size, n - b * args.batch_size) for b in kept)
    if kept:
        log("resuming: %d finished batches (%d particles) of this job are kept" % (len(kept), done_before))
    start = time.time()
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
        _, device = _align(args, inputs, settings)
    seconds = time.time() - start
    try:
        res = merge_results(inputs, args.out, args.outlier_threshold, args.data_root)
    except EngineInputError as exc:
        fail(str(exc))
    # VmHWM, not getrusage's ru_maxrss: the latter keeps the parent's peak across fork + exec.
    summary = {"command": "hemnma", "n_particles": n, "box": inputs.box, "apix": inputs.apix,
               "modes": inputs.numbers, "peak_rss_GB": host_memory_gb()[1], "n_atoms": len(inputs.model),
               "ctf_mode": inputs.ctf_mode, "device": device, "seconds": seconds,
               "particles_per_second": (n - done_before) / max(seconds, 1e-9), "cost_mean": float(res["cost"].mean()),
               "outliers": int(res["outlier"].sum()), "failed": res["n_failed"],
               "outlier_threshold": args.outlier_threshold, "amplitude_mean": res["amplitudes"].mean(0),
               "fit_quality_median": _nan_median(res["fit_quality"]), "poor_fit": int(res["poor_fit"].sum()),
               "poor_fit_threshold": POOR_FIT, "poor_fit_warning_share": POOR_FIT_WARNING,
               "conformations": len(inputs.path),
               "particles_per_conformation": np.bincount(res["reference"], minlength=len(inputs.path)).tolist(),
               "amplitude_std": res["amplitudes"].std(0), "resumed_batches": len(kept),
               "resumed_particles": done_before, "files": outputs.FILES}
    write_summary(os.path.join(args.out, outputs.SUMMARY), summary)
    log("done: %d particles (%d aligned in this run) in %.1f s (%.1f/s); mean cost %.4f; "
        "%d outliers (Mahalanobis > %.1f); fit quality median %.3f"
        % (n, n - done_before, seconds, summary["particles_per_second"], summary["cost_mean"], summary["outliers"],
           args.outlier_threshold, summary["fit_quality_median"]))
    if summary["poor_fit"] > POOR_FIT_WARNING * n:
        log("WARNING: %d of %d particles (%.0f %%) have a fit quality below %.2f: the modes do not explain their "
            "conformation, and their poses and amplitudes are less reliable (see cryoflexFitQuality; more modes, "
            "or other conformations with --other-references, may help)"
            % (summary["poor_fit"], n, 100.0 * summary["poor_fit"] / n, POOR_FIT))
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
