"""AdK-1D, the heterogeneity yardstick: cryoDRGN (train_vae, fixed poses) and HEMNMA side by side.

GPU machine (Python 3.12, CUDA torch, numpy 2, scipy, scikit-learn, pandas, matplotlib, seaborn, pyyaml; no
internet, no ProDy, no mrcfile).  Prepare the wheels here once (11 MB in .whl/, ignored by git):

    ../shared/tools/device-wheels.sh cryodrgn==4.3.1 igraph texttable nbformat fastjsonschema jsonschema \
        jsonschema-specifications referencing rpds-py attrs traitlets

    wheels: cryodrgn-4.3.1 (4.9 MB), igraph-1.0.0 cp39-abi3 (5.7 MB), texttable-1.7.2, nbformat-5.11.1,
    fastjsonschema-2.22.3, jsonschema-4.26.0, jsonschema_specifications-2025.9.1, referencing-0.37.0,
    rpds_py-2026.9.1 cp312, attrs-26.1.0, traitlets-5.16.1, plus the script's defaults mrcfile-1.5.4,
    emtable-0.0.14, starfile-0.5.13.  Why these: cryoDRGN's commands are run through a small runner (the
    ``cryodrgn`` entry point imports every command, the dashboard's Flask/Jupyter stack included);
    ``cryodrgn.utils`` imports igraph (-> texttable), and train_vae imports ``commands.analyze`` at
    module level (-> nbformat -> fastjsonschema, jsonschema, referencing, rpds-py, attrs, traitlets)
    even with --no-analysis, which this script passes so that nothing else (umap, plotly, Jupyter) runs.

Device commands.  Recommended: one call per SNR (about 8 minutes each; carry [".whl"]):

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD && python3 benchmarks/bench_adk1d.py --snr 0.01 --tag h200_snr0.01 --time-budget 450 --logs $OUT/logs --out $OUT/adk1d_h200_snr0.01.json

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD && python3 benchmarks/bench_adk1d.py --snr 0.1 --tag h200_snr0.1 --time-budget 450 --logs $OUT/logs --out $OUT/adk1d_h200_snr0.1.json

or both SNRs in one call (about 8.5 minutes, half the epochs each):

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD && python3 benchmarks/bench_adk1d.py --snr 0.1 --tag h200_snr0.1 --time-budget 235 --out $OUT/adk1d_h200_snr0.1.json && python3 benchmarks/bench_adk1d.py --snr 0.01 --tag h200_snr0.01 --time-budget 235 --out $OUT/adk1d_h200_snr0.01.json

--time-budget covers the whole script; training stops after the last epoch that ends before
budget - reserve (reserve: 25% of the budget, at least 60 s, for eval_vol, HEMNMA and scoring).

CPU validation here (a venv with cryodrgn 4.3.1 on PYTHONPATH or installed):

    python benchmarks/bench_adk1d.py --quick --device cpu                         # small architecture, 2 epochs
    python benchmarks/bench_adk1d.py --quick --full-arch --epochs 1 --device cpu  # cryoDRGN's default architecture

What it does (all under --work, default /tmp/adk1d_<tag>):
1. builds AdK-1D with the ``yardstick build`` command from the prepared inputs in benchmarks/data/adk1d/
   (DIMS trajectory, heavy atoms; frame-0 model; its RTB modes, computed here with
   ``nma --atoms frame000_heavy.npz --model RTB --cutoff 8 --block-size 10 -n 10``): 98 frames x
   --particles-per-frame, 128 px, 1 A/px, CTF, random poses, CryoBench SNR (box SNR = 4 x SNR), shifts +/- 5 A;
2. conventions check: noiseless frame-0 particles (same pose/shift/CTF model) back-projected by cryoDRGN's
   ``backproject_voxel`` from our pose/CTF pickles, and reconstructed by a short ``train_nn`` (the decoder
   path eval_vol uses), compared with our ground-truth map under every flip/transpose/sign; the best
   variant is applied to every cryoDRGN volume below (found on the CPU: none, AU-FSC 0.470 of 0.484 as is);
3. cryoDRGN ``train_vae`` (default architecture, --zdim 1 and 8, fixed true poses, --no-analysis, seed 0),
   both at once on a GPU; stopped after the last epoch that fits --time-budget (weights are saved every
   epoch, the last finished one is evaluated);
4. HEMNMA (our ``hemnma`` command, frame-0 reference, RTB modes 7-9, global search + the true poses as one
   more start, --use-input-poses) on the same particles, meanwhile;
5. scores: per-image AU-FSC (CryoBench: ``cryodrgn eval_vol`` at the latents of --n-eval random images,
   and for HEMNMA the Gaussian map of the reference deformed by each image's amplitudes, against the
   ground-truth map of its frame; unmasked as CryoBench's default, and inside a mask around all frames),
   Spearman rho of the latent PC1 (z itself for zdim 1; amplitudes' PC1 for HEMNMA) with the frame index
   and the LID-NMP distance over all particles; baselines: the frame-0 map for every image (no
   heterogeneity) and the best map modes 7-9 can give (least-squares amplitudes of the true frame);
   wall time per epoch and in total.  Prints a table last and writes the JSON (--out, default
   benchmarks/results/adk1d_<tag>.json).
"""
import argparse
import glob
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

from _common import report  # noqa: E402
from cryoflex_scipion.engine.__main__ import main as engine_main  # noqa: E402
from cryoflex_scipion.engine.core.atoms import deform  # noqa: E402
from cryoflex_scipion.engine.core.io.cryodrgn import write_cryodrgn_inputs  # noqa: E402
from cryoflex_scipion.engine.core.io.mrc import read_map  # noqa: E402
from cryoflex_scipion.engine.core.io.particles import read_particles  # noqa: E402
from cryoflex_scipion.engine.core.metrics import au_fsc, fsc_curves  # noqa: E402
from cryoflex_scipion.engine.core.simulation import Conformations, SimulationSettings, simulate_particles  # noqa: E402
from cryoflex_scipion.engine.yardstick import (GroundTruthMaps, latent_correlations, load_dataset,  # noqa: E402
                                               score_volumes)

DATA = os.path.join(HERE, "data", "adk1d")
# cryoDRGN commands without the ``cryodrgn`` entry point (which imports all commands and their packages)
DRGN_RUNNER = ("import argparse, importlib, sys; m = importlib.import_module('cryodrgn.commands.' + sys.argv[1]); "
               "p = argparse.ArgumentParser(); m.add_args(p); m.main(p.parse_args(sys.argv[2:]))")
SMALL_ARCH = ["--enc-layers", "2", "--enc-dim", "128", "--dec-layers", "2", "--dec-dim", "128"]
CHILDREN = []   # subprocesses started here, ended if the script fails


def start(cmd, logfile, **kw):
    proc = subprocess.Popen(cmd, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True, **kw)
    CHILDREN.append(proc)
    return proc


def end_children():
    for proc in CHILDREN:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, 9)
            except ProcessLookupError:
                pass


def log(msg):
    print("[adk1d %s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def drgn_cmd(command, *args):
    return [sys.executable, "-c", DRGN_RUNNER, command] + [str(a) for a in args]


def run_logged(cmd, logfile, env=None):
    t = time.perf_counter()
    with open(logfile, "w") as fh:
        code = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    if code != 0:
        tail = open(logfile).read()[-3000:]
        raise RuntimeError("%s failed (exit %d); end of %s:\n%s" % (cmd[3] if len(cmd) > 3 else cmd, code, logfile,
                                                                  tail))
    return time.perf_counter() - t


# ------------------------------------------------------------------------------------------------
# dataset and conventions check

def build_dataset(args, folder):
    summary_path = os.path.join(folder, "summary.json")
    argv = ["yardstick", "build", "--trajectory", os.path.join(args.data, "adk_dims_heavy.npz"),
            "--reference", os.path.join(args.data, "frame000_heavy.npz"), "-o", folder, "--frames", args.frames,
            "--particles-per-frame", str(args.particles_per_frame), "--box", str(args.box), "--apix", str(args.apix),
            "--snr", str(args.snr), "--snr-convention", args.snr_convention, "--no-maps", "--device", args.device,
            "--seed", str(args.seed), "--batch-size", "512"]
    if args.reuse and os.path.exists(summary_path):
        old = json.load(open(summary_path))
        if old.get("argv") == argv:
            log("reusing the dataset in %s" % folder)
            return old, 0.0
    shutil.rmtree(folder, ignore_errors=True)
    t = time.perf_counter()
    assert engine_main(argv) == 0
    seconds = time.perf_counter() - t
    summary = json.load(open(summary_path))
    summary["argv"] = argv
    json.dump(summary, open(summary_path, "w"), indent=1)
    return summary, seconds


def conventions_check(args, dataset, folder):
    """cryoDRGN's back-projection of noiseless frame-0 particles (our poses/CTF pickles) against our
    ground-truth map of frame 0, under every flip/transpose/sign; returns the table and the best variant."""
    t = time.perf_counter()
    os.makedirs(folder, exist_ok=True)
    ref = dataset.reference_model()
    conf = Conformations(ref.coords, ref.weights, center=dataset.center)
    sim = SimulationSettings(n_particles=args.check_particles, size=dataset.size, apix=dataset.apix, snr=None,
                             max_shift=5.0, sigma=dataset.sigma, seed=args.seed + 101)
    simulate_particles(folder, conf, sim, args.device, 512)
    write_cryodrgn_inputs(read_particles(os.path.join(folder, "particles.star")), os.path.join(folder, "poses.pkl"),
                          os.path.join(folder, "ctf.pkl"))
    particles, poses, ctf = (os.path.join(folder, f) for f in ("particles.mrcs", "poses.pkl", "ctf.pkl"))
    out = os.path.join(folder, "backproject")
    bp_s = run_logged(drgn_cmd("backproject_voxel", particles, "--poses", poses, "--ctf", ctf, "-o", out,
                               "--no-half-maps", "--no-fsc-vals"), os.path.join(folder, "backproject.log"))
    gt = dataset.frame_map(0, dtype=torch.float64).numpy()
    result = {"particles": args.check_particles, "noiseless": True, "shifts_A": 5.0, "ctf": True,
              "au_fsc_max_possible": float(au_fsc(np.ones(dataset.size // 2)))}
    result["backproject_voxel"] = compare_variants(os.path.join(out, "backproject.mrc"), gt)
    result["backproject_voxel"]["seconds"] = bp_s
    # the decoder path (what eval_vol evaluates): a short homogeneous train_nn on the same particles
    nn_out = os.path.join(folder, "train_nn")
    nn_s = run_logged(drgn_cmd("train_nn", particles, "--poses", poses, "--ctf", ctf, "-o", nn_out, "-n",
                               args.check_epochs, "--seed", args.seed, *(["--layers", "2", "--dim", "128"]
                                                                          if args.small_arch else [])),
                      os.path.join(folder, "train_nn.log"))
    result["train_nn"] = compare_variants(os.path.join(nn_out, "reconstruct.mrc"), gt)
    result["train_nn"].update(seconds=nn_s, epochs=args.check_epochs)
    keys = ("transpose", "flip", "invert")
    bp, tn = result["backproject_voxel"], result["train_nn"]
    result["agree"] = all(bp["best"][k] == tn["best"][k] for k in keys)
    # back-projection decides (it is exact); a well-trained decoder that disagrees overrides it
    decisive = tn if (not result["agree"] and tn["best"]["au_fsc"] > 0.5 * result["au_fsc_max_possible"]) else bp
    result["fix_applied"] = {k: decisive["best"][k] for k in keys}
    result["decided_by"] = "train_nn" if decisive is tn else "backproject_voxel"
    result["seconds"] = time.perf_counter() - t
    return result


def compare_variants(path, gt):
    """AU-FSC and signed low-frequency FSC of a cryoDRGN volume against ``gt`` under every transpose/flip/sign."""
    vol, info = read_map(path)
    rows = []
    for transpose in (False, True):
        for flip in (False, True):
            for invert in (False, True):
                v = apply_fix(vol, {"transpose": transpose, "flip": flip, "invert": invert})
                curve = fsc_curves(v, gt)
                q = len(curve) // 2
                rows.append({"transpose": transpose, "flip": flip, "invert": invert, "au_fsc": float(au_fsc(curve)),
                             "signed_mean_fsc_low": float(np.mean(curve[1:q]))})
    best = max(rows, key=lambda r: (round(r["au_fsc"], 4), r["signed_mean_fsc_low"]))
    return {"volume_shape": list(vol.shape), "apix_header": info.apix, "variants": rows, "best": best,
            "as_is_au_fsc": rows[0]["au_fsc"], "as_is_signed_mean_fsc_low": rows[0]["signed_mean_fsc_low"]}


def apply_fix(vol, fix):
    """A cryoDRGN volume put into our frame: transpose (z <-> x), flip along the first array axis (eval_vol's
    --flip), sign."""
    v = np.asarray(vol, dtype=np.float64)
    if fix.get("transpose"):
        v = v.transpose(2, 1, 0)
    if fix.get("flip"):
        v = v[::-1]
    if fix.get("invert"):
        v = -v
    return np.ascontiguousarray(v)


# ------------------------------------------------------------------------------------------------
# cryoDRGN training under a time budget

class DrgnTraining:
    def __init__(self, zdim, args, data_dir, work):
        self.zdim, self.outdir = zdim, os.path.join(work, "drgn_z%d" % zdim)
        shutil.rmtree(self.outdir, ignore_errors=True)
        os.makedirs(self.outdir)
        self.logfile = os.path.join(work, "drgn_z%d.log" % zdim)
        self.cmd = drgn_cmd("train_vae", os.path.join(data_dir, "particles.mrcs"), "-o", self.outdir,
                            "--zdim", zdim, "--poses", os.path.join(work, "poses.pkl"), "--ctf",
                            os.path.join(work, "ctf.pkl"), "-n", args.epochs, "--no-analysis", "--seed", args.seed,
                            "--shuffle-seed", args.seed, *(SMALL_ARCH if args.small_arch else []))
        self.proc, self.start, self.end, self.stopped_early = None, None, None, False
        self.epoch_done_at = {}

    def launch(self):
        self.start = time.time()
        self.fh = open(self.logfile, "w")
        self.proc = start(self.cmd, self.fh)
        log("cryoDRGN zdim %d started (%d epochs at most)" % (self.zdim, int(self.cmd[self.cmd.index("-n") + 1])))

    def finished_epochs(self):
        for path in glob.glob(os.path.join(self.outdir, "z.*.pkl")):
            e = int(re.findall(r"z\.(\d+)\.pkl$", path)[0])
            self.epoch_done_at.setdefault(e, os.path.getmtime(path))
        return sorted(self.epoch_done_at)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def poll(self, deadline):
        """Stop the run when its next epoch would end after ``deadline``; True while it runs."""
        if not self.running():
            if self.end is None and self.proc is not None:
                self.end = time.time()
                self.fh.close()
            return False
        done = self.finished_epochs()
        if done:
            times = [self.start] + [self.epoch_done_at[e] for e in done]
            per_epoch = (times[-1] - times[0]) / len(done)
            if times[-1] + 1.05 * per_epoch > deadline:
                time.sleep(2.0)  # let the checkpoint of the epoch just finished be written completely
                self.stop("the next epoch (%.0f s) would end after the time budget" % per_epoch)
                return False
        elif time.time() > deadline:
            self.stop("no epoch finished within the time budget")
            return False
        return True

    def stop(self, why):
        log("cryoDRGN zdim %d stopped after %d epochs: %s" % (self.zdim, len(self.finished_epochs()), why))
        self.stopped_early = True
        try:
            os.killpg(self.proc.pid, 15)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()
        self.end = time.time()
        self.fh.close()

    def last_checkpoint(self):
        """(epoch, z_mu) of the last epoch whose weights and latents load."""
        for e in sorted(self.finished_epochs(), reverse=True):
            try:
                with open(os.path.join(self.outdir, "z.%d.pkl" % e), "rb") as fh:
                    z = np.asarray(pickle.load(fh))
                torch.load(os.path.join(self.outdir, "weights.%d.pkl" % e), map_location="cpu", weights_only=False)
                return e, z
            except Exception as exc:  # a checkpoint cut by the stop: take the one before
                log("checkpoint of epoch %d unreadable (%s); trying the previous one" % (e, exc))
        return None, None

    def timings(self):
        text = open(self.logfile).read() if os.path.exists(self.logfile) else ""
        train = []
        for h, m, s in re.findall(r"=====> Epoch: \d+ .*Finished in (\d+):(\d+):([\d.]+)", text):
            train.append(int(h) * 3600 + int(m) * 60 + float(s))
        done = self.finished_epochs()
        times = [self.start] + [self.epoch_done_at[e] for e in done]
        return {"epochs_finished": len(done), "epoch_train_seconds": train,
                "epoch_wall_seconds_incl_eval_z": list(np.diff(times)),
                "first_checkpoint_after_s": (times[1] - times[0]) if done else None,
                "process_seconds": (self.end or time.time()) - self.start, "stopped_early": self.stopped_early}


def start_eval(run, dataset, ids, frames_all, lid_all, work):
    """Latent correlations of the last finished epoch, and ``eval_vol`` started at the latents of ``ids``."""
    epoch, z = run.last_checkpoint()
    out = {"zdim": run.zdim, **run.timings(), "epoch_evaluated": epoch}
    if epoch is None:
        out["error"] = "no finished epoch"
        return out, None
    out.update(latent_correlations(z, frames_all, lid_all))
    out["abs_rho_pc1_frame_by_epoch"] = {}   # convergence of the latent ordering, from every saved epoch
    for e in run.finished_epochs():
        try:
            with open(os.path.join(run.outdir, "z.%d.pkl" % e), "rb") as fh:
                out["abs_rho_pc1_frame_by_epoch"][e] = latent_correlations(np.asarray(pickle.load(fh)),
                                                                           frames_all)["abs_rho_pc1_frame"]
        except Exception:  # a file cut by the stop
            pass
    zfile = os.path.join(work, "z%d_eval.txt" % run.zdim)
    np.savetxt(zfile, z[ids].reshape(len(ids), -1))
    vols = os.path.join(work, "vols_z%d" % run.zdim)
    shutil.rmtree(vols, ignore_errors=True)
    logfile = open(os.path.join(work, "eval_vol_z%d.log" % run.zdim), "w")
    cmd = drgn_cmd("eval_vol", os.path.join(run.outdir, "weights.%d.pkl" % epoch), "-c",
                   os.path.join(run.outdir, "config.yaml"), "-o", vols, "--zfile", zfile, "--Apix", dataset.apix,
                   "--vol-start-index", 0)
    return out, {"proc": start(cmd, logfile), "log": logfile,
                 "start": time.perf_counter(), "vols": vols}


def finish_eval(out, job, dataset, ids, frames_all, fix, gt_maps, mask):
    if job is None:
        return out
    code = job["proc"].wait()
    job["log"].close()
    out["eval_vol_seconds"] = time.perf_counter() - job["start"]
    out["eval_vol_seconds_per_volume"] = out["eval_vol_seconds"] / len(ids)
    if code != 0:
        out["error"] = "eval_vol exited %d; see %s" % (code, job["log"].name)
        return out
    volumes = (apply_fix(read_map(os.path.join(job["vols"], "vol_%03d.mrc" % i))[0], fix) for i in range(len(ids)))
    out.update(score_images(volumes, ids, dataset, frames_all, gt_maps, mask))
    # diagnostic: the same images' volumes flipped or transposed should score lower
    k = min(10, len(ids))
    diag = {}
    for name, extra in (("flipped", {"flip": True}), ("transposed", {"transpose": True})):
        alt = dict(fix)
        alt.update({key: not fix.get(key, False) for key in extra})
        vols = (apply_fix(read_map(os.path.join(job["vols"], "vol_%03d.mrc" % i))[0], alt) for i in range(k))
        diag[name] = score_images(vols, ids[:k], dataset, frames_all, gt_maps, None)["au_fsc"]["au_fsc_mean"]
    diag["as_used"] = float(np.mean(out["au_fsc"]["values"][:k]))
    out["orientation_diagnostic_first_%d" % k] = diag
    shutil.rmtree(job["vols"], ignore_errors=True)  # 8 MB per 128^3 volume
    return out


def score_images(volumes, ids, dataset, frames_all, gt_maps, mask):
    """Per-image AU-FSC of ``volumes`` (one per image of ``ids``), unmasked and inside ``mask``."""
    t = time.perf_counter()
    _, summary = score_volumes(dataset, frames_all[np.asarray(ids, dtype=np.int64)], volumes, device=gt_maps.device,
                               gt_maps=gt_maps, masks={"mask": mask})
    out = {"au_fsc_masked": summary.pop("masked")["mask"], "au_fsc": summary}
    out["scoring_seconds"] = time.perf_counter() - t
    return out


def union_mask(dataset, gt_maps, device, dilate_px=3, level=0.02):
    """Binary mask of all frames' density above ``level`` x its maximum, dilated by ``dilate_px``."""
    m = None
    for f in dataset.frame_ids:
        v = gt_maps.dataset.frame_map(int(f), device, torch.float64)
        above = v > level * v.max()
        m = above if m is None else (m | above)
    k = 2 * dilate_px + 1
    m = torch.nn.functional.max_pool3d(m[None, None].double(), k, stride=1, padding=dilate_px)[0, 0]
    return m


# ------------------------------------------------------------------------------------------------
# HEMNMA

def start_hemnma(args, data_dir, work, n_particles, env=None):
    star = os.path.join(data_dir, "particles.star")
    if args.hemnma_max and args.hemnma_max < n_particles:
        table = read_particles(star)
        sub = np.sort(np.random.default_rng(args.seed + 7).choice(n_particles, args.hemnma_max, replace=False))
        star, index = os.path.join(data_dir, "hemnma_subset.star"), sub   # beside the stack it names
        table.subset(sub).to_star(star)
    else:
        index = np.arange(n_particles)
    out = os.path.join(work, "hemnma")
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "cryoflex_scipion.engine", "hemnma", "--particles", star, "--atoms",
           os.path.join(data_dir, "reference.npz"), "--modes", os.path.join(args.data, "modes_rtb.npy"),
           "--mode-list", "7-9", "--use-input-poses", "-o", out, "--device", args.device, "--seed", str(args.seed)]
    logfile = open(os.path.join(work, "hemnma.log"), "w")
    log("HEMNMA started on %d particles" % len(index))
    return {"proc": start(cmd, logfile, cwd=ROOT, env=env), "log": logfile,
            "start": time.time(), "index": index, "out": out}


def score_hemnma(h, args, dataset, ids, frames_all, lid_all, gt_maps, mask):
    code = h["proc"].wait()
    seconds = time.time() - h["start"]
    h["log"].close()
    if code != 0:
        return {"error": "hemnma exited %d; see %s" % (code, h["log"].name)}
    with np.load(os.path.join(h["out"], "results.npz")) as r:
        amps = r["amplitudes"]
    index = h["index"]
    summary = json.load(open(os.path.join(h["out"], "summary.json")))
    out = {"n_particles": len(index), "seconds": seconds,
           "particles_per_second": summary.get("particles_per_second"),
           **latent_correlations(amps, frames_all[index], lid_all[index])}
    modes = np.load(os.path.join(args.data, "modes_rtb.npy")).astype(np.float64)[6:9]
    ref = dataset.reference
    pos = {int(p): k for k, p in enumerate(index)}
    scored = [i for i in ids if int(i) in pos]
    device = gt_maps.device
    volumes = (dataset.atoms_map(deform(ref, modes, amps[pos[int(i)]]), device, torch.float64) for i in scored)
    out.update(score_images(volumes, scored, dataset, frames_all, gt_maps, mask))
    out["amplitude_sd"] = amps.std(0).tolist()
    return out


def baselines(dataset, ids, frames_all, gt_maps, mask, args):
    """Frame-0 map for every image (no heterogeneity), and the best map of modes 7-9 (least-squares
    amplitudes of the true frame's displacement)."""
    modes = np.load(os.path.join(args.data, "modes_rtb.npy")).astype(np.float64)[6:9]
    flat = modes.reshape(3, -1)
    ref = dataset.reference
    device = gt_maps.device
    frame0 = dataset.atoms_map(ref, device, torch.float64)
    best = {}
    for f in np.unique(frames_all[ids]):
        q, *_ = np.linalg.lstsq(flat.T, (dataset.frame_coords(int(f)) - ref).ravel(), rcond=None)
        best[int(f)] = dataset.atoms_map(deform(ref, modes, q), device, torch.float64)
    return {"frame0_map_for_all": score_images((frame0 for _ in ids), ids, dataset, frames_all, gt_maps, mask),
            "modes_7_9_best_fit": score_images((best[int(frames_all[i])] for i in ids), ids, dataset, frames_all,
                                               gt_maps, mask)}


# ------------------------------------------------------------------------------------------------

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--snr", type=float, default=0.01)
    p.add_argument("--snr-convention", default="cryobench", choices=["cryobench", "box"])
    p.add_argument("--tag", default=None)
    p.add_argument("--out", default=None, help="JSON (default: benchmarks/results/adk1d_<tag>.json)")
    p.add_argument("--data", default=DATA, help="prepared inputs (trajectory, frame-0 atoms, modes)")
    p.add_argument("--work", default=None, help="work folder (default: /tmp/adk1d_<tag>)")
    p.add_argument("--reuse", action="store_true", help="reuse a dataset built with the same arguments")
    p.add_argument("--frames", default="all")
    p.add_argument("--particles-per-frame", type=int, default=100)
    p.add_argument("--box", type=int, default=128)
    p.add_argument("--apix", type=float, default=1.0)
    p.add_argument("--zdims", type=int, nargs="+", default=[1, 8])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds for the whole script: training stops after the last epoch that fits")
    p.add_argument("--reserve", type=float, default=None,
                   help="seconds kept for evaluation and scoring after training (default: 25%% of the budget, "
                        "at least 60)")
    p.add_argument("--n-eval", type=int, default=100, help="images whose volumes are scored (AU-FSC; CryoBench: 100)")
    p.add_argument("--check-particles", type=int, default=2000, help="noiseless particles of the conventions check")
    p.add_argument("--check-epochs", type=int, default=3, help="train_nn epochs of the conventions check")
    p.add_argument("--hemnma-max", type=int, default=0, help="align at most this many particles (0: all)")
    p.add_argument("--no-hemnma", action="store_true")
    p.add_argument("--no-drgn", action="store_true", help="skip cryoDRGN (HEMNMA and baselines only)")
    p.add_argument("--no-check", action="store_true")
    p.add_argument("--sequential", action="store_true", help="train the zdims one after the other (CPU default)")
    p.add_argument("--quick", action="store_true",
                   help="CPU validation: 10 frames x 20 particles, 64 px at 1.5 A/px, 2 epochs, small architecture")
    p.add_argument("--full-arch", action="store_true", help="with --quick: cryoDRGN's default architecture")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--logs", default=None, help="copy the cryoDRGN/HEMNMA logs into this folder at the end")
    args = p.parse_args()
    t_start = time.time()
    # in-process simulation and maps are small: skip torch.compile's start-up (the hemnma subprocess keeps it)
    child_env = dict(os.environ)
    os.environ.setdefault("CRYOFLEX_COMPILE", "0")
    args.small_arch = False
    if args.quick:
        given = set(a.split("=")[0] for a in sys.argv[1:])
        defaults = {"--frames": "0-97:10", "--particles-per-frame": 20, "--box": 64, "--apix": 1.5, "--epochs": 2,
                    "--n-eval": 12, "--check-particles": 400, "--check-epochs": 2, "--hemnma-max": 40}
        for flag, value in defaults.items():
            if flag not in given:
                setattr(args, flag[2:].replace("-", "_"), value)
        args.small_arch = not args.full_arch
    if ":" in args.frames:   # "a-b:step"
        rng_, step = args.frames.split(":")
        a, b = (int(x) for x in rng_.split("-"))
        args.frames = ",".join(str(f) for f in range(a, b + 1, int(step)))
    args.tag = args.tag or ("%s_snr%g%s" % ("cuda" if args.device.startswith("cuda") else "cpu", args.snr,
                                             "_quick" if args.quick else ""))
    args.out = args.out or os.path.join(HERE, "results", "adk1d_%s.json" % args.tag)
    work = args.work or "/tmp/adk1d_%s" % args.tag
    os.makedirs(work, exist_ok=True)
    deadline = t_start + args.time_budget if args.time_budget else float("inf")
    reserve = args.reserve if args.reserve is not None else (max(60.0, 0.25 * args.time_budget)
                                                              if args.time_budget else 0.0)
    device = torch.device(args.device)
    result = {"benchmark": "AdK-1D: cryoDRGN train_vae and HEMNMA", "date": time.strftime("%Y-%m-%d %H:%M"),
              "tag": args.tag, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else
              "cpu (%d threads)" % torch.get_num_threads(), "torch": torch.__version__, "numpy": np.__version__,
              "python": sys.version.split()[0], "argv": sys.argv[1:], "quick": args.quick,
              "cryodrgn_architecture": "small " + " ".join(SMALL_ARCH) if args.small_arch else "default (3x1024)"}
    try:
        import importlib.metadata as md
        result["cryodrgn_version"] = md.version("cryodrgn")
    except Exception:
        result["cryodrgn_version"] = None

    try:
        # 1. dataset
        data_dir = os.path.join(work, "data")
        summary, build_s = build_dataset(args, data_dir)
        dataset = load_dataset(data_dir)
        truth = dataset.ground_truth()
        frames_all, lid_all = truth["frame"], truth["lid_nmp_A"]
        n = len(frames_all)
        result["dataset"] = {k: summary[k] for k in ("n_frames", "particles_per_frame", "n_particles", "n_atoms", "box",
                                                     "apix", "atom_sigma_A", "snr", "lid_nmp_A_range", "radius_A",
                                                     "reach_A", "half_width_A")}
        result["dataset"]["build_seconds"] = build_s
        log("dataset: %d particles, box SNR %.4g measured (CryoBench SNR %g), built in %.1f s"
            % (n, summary["snr"]["box_snr_measured_mean"], summary["snr"]["cryobench_nominal_snr"], build_s))
        write_cryodrgn_inputs(read_particles(os.path.join(data_dir, "particles.star")), os.path.join(work, "poses.pkl"),
                              os.path.join(work, "ctf.pkl"))

        # 2. conventions check
        fix = {"transpose": False, "flip": False, "invert": False}
        if not args.no_check:
            check = conventions_check(args, dataset, os.path.join(work, "check"))
            fix = check["fix_applied"]
            result["conventions_check"] = check
            for name in ("backproject_voxel", "train_nn"):
                c = check[name]
                log("conventions check, cryoDRGN %s vs our frame-0 map: AU-FSC %.4f as is (max %.4f), signed "
                    "low-frequency FSC %.3f; best variant %s (AU-FSC %.4f)"
                    % (name, c["as_is_au_fsc"], check["au_fsc_max_possible"], c["as_is_signed_mean_fsc_low"],
                       {k: v for k, v in c["best"].items() if v is True} or "none", c["best"]["au_fsc"]))
            log("conventions: applied to every cryoDRGN volume: %s (decided by %s)"
                % ({k: v for k, v in fix.items() if v} or "nothing", check["decided_by"]))

        # 3-4. cryoDRGN trainings and HEMNMA
        runs = [] if args.no_drgn else [DrgnTraining(z, args, data_dir, work) for z in args.zdims]
        train_deadline = deadline - reserve
        parallel = device.type == "cuda" and not args.sequential
        hem = None if args.no_hemnma else start_hemnma(args, data_dir, work, n, child_env)
        t_train = time.time()
        if parallel:
            for r in runs:
                r.launch()
            while any([r.poll(train_deadline) for r in runs]):
                time.sleep(0.5)
        else:
            for k, r in enumerate(runs):   # an equal share of the time left for each run
                share = time.time() + (train_deadline - time.time()) / (len(runs) - k)
                r.launch()
                while r.poll(share):
                    time.sleep(0.5)
        result["training_wall_seconds"] = time.time() - t_train

        # 5. scores
        rng = np.random.default_rng(args.seed + 11)
        ids = np.sort(rng.choice(n, min(args.n_eval, n), replace=False))
        gt_maps = GroundTruthMaps(dataset, device, keep=128)
        mask = union_mask(dataset, gt_maps, device)
        result["mask"] = {"rule": "union over frames of map > 2% of its max, dilated 3 px (binary)",
                          "fraction_of_box": float(mask.mean())}
        result["n_eval"] = len(ids)
        result["cryodrgn"] = {}
        t_eval = time.time()
        jobs = [start_eval(r, dataset, ids, frames_all, lid_all, work) for r in runs]   # all eval_vol at once
        for r, (out, job) in zip(runs, jobs):
            result["cryodrgn"]["zdim%d" % r.zdim] = finish_eval(out, job, dataset, ids, frames_all, fix, gt_maps, mask)
        result["evaluation_wall_seconds"] = time.time() - t_eval
        if hem is not None:
            result["hemnma"] = score_hemnma(hem, args, dataset, ids, frames_all, lid_all, gt_maps, mask)
        result["baselines"] = baselines(dataset, ids, frames_all, gt_maps, mask, args)
        result["au_fsc_max_possible"] = float(au_fsc(np.ones(dataset.size // 2)))
        result["total_seconds"] = time.time() - t_start
    except BaseException as exc:
        import traceback
        result["error"] = "".join(traceback.format_exception(exc))[-4000:]
        result["total_seconds"] = time.time() - t_start
        end_children()
        report(result, args.out)   # what was measured so far
        raise
    finally:
        if args.logs:
            os.makedirs(args.logs, exist_ok=True)
            for path in glob.glob(os.path.join(work, "*.log")) + glob.glob(os.path.join(work, "check", "*.log")):
                shutil.copy(path, os.path.join(args.logs, os.path.relpath(path, work).replace(os.sep, "_")))
    report(result, args.out)
    print_table(result)


def print_table(r):
    def fmt(x, f="%.4f"):
        return "-" if x is None else f % x
    print("\nAdK-1D %s: %d particles (%d frames x %d), %d px, %.2f A/px, CryoBench SNR %g (box %.3g); "
          "AU-FSC max %.4f, %d images scored"
          % (r["tag"], r["dataset"]["n_particles"], r["dataset"]["n_frames"], r["dataset"]["particles_per_frame"],
             r["dataset"]["box"], r["dataset"]["apix"], r["dataset"]["snr"]["cryobench_nominal_snr"],
             r["dataset"]["snr"]["box_snr"], r["au_fsc_max_possible"], r["n_eval"]))
    if "conventions_check" in r:
        c = r["conventions_check"]
        print("conventions (noiseless frame 0 vs our map): backproject_voxel AU-FSC %.4f, train_nn %.4f as is; "
              "fix applied %s" % (c["backproject_voxel"]["as_is_au_fsc"], c["train_nn"]["as_is_au_fsc"],
                                  {k: v for k, v in c["fix_applied"].items() if v} or "none"))
    head = "%-22s %8s %8s %9s %9s %8s %8s %9s %9s" % ("method", "AU-FSC", "sd", "masked", "FSC.5 A", "|rho| fr",
                                                       "|rho| LN", "s/epoch", "total s")
    print(head)
    print("-" * len(head))
    rows = []
    for k, d in r.get("cryodrgn", {}).items():
        if "error" in d:
            print("%-22s %s" % ("cryoDRGN " + k, d["error"]))
            continue
        ep = d["epoch_wall_seconds_incl_eval_z"]
        rows.append(("cryoDRGN %s (%d ep)" % (k, d["epoch_evaluated"]), d, np.mean(ep) if ep else None,
                     d["process_seconds"] + d.get("eval_vol_seconds", 0)))
    if "hemnma" in r and "error" not in r["hemnma"]:
        rows.append(("HEMNMA modes 7-9", r["hemnma"], None, r["hemnma"]["seconds"]))
    for name, d, per_epoch, total in rows:
        a = d["au_fsc"]
        print("%-22s %8.4f %8.4f %9.4f %9.2f %8.3f %8.3f %9s %9.1f" % (
            name, a["au_fsc_mean"], a["au_fsc_sd"], d["au_fsc_masked"]["au_fsc_mean"], a["fsc05_A_median"],
            d["abs_rho_pc1_frame"], d["abs_rho_pc1_lid_nmp"], fmt(per_epoch, "%.1f"), total))
    for name, d in r["baselines"].items():
        a = d["au_fsc"]
        print("%-22s %8.4f %8.4f %9.4f %9.2f %8s %8s %9s %9s" % (
            "baseline " + name[:13], a["au_fsc_mean"], a["au_fsc_sd"], d["au_fsc_masked"]["au_fsc_mean"],
            a["fsc05_A_median"], "-", "-", "-", "-"))
    print("total %.0f s" % r["total_seconds"])


if __name__ == "__main__":
    main()
