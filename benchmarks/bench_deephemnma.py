"""DeepHEMNMA accuracy, training time and inference throughput on the paper's synthetic AdK experiment.

    python benchmarks/bench_deephemnma.py --device cuda --runs truth:shared --train-seconds 300 \\
        --out benchmarks/results/deephemnma_h200.json
    python benchmarks/bench_deephemnma.py --quick --out /tmp/deephemnma_quick.json     # CPU check, ~2 min

Data (bench_hemnma.make_dataset, the DeepHEMNMA paper's synthetic set: 4AKE chain A heavy atoms,
modes 7-9, q7 = -200 r, q8 = 200 sin(pi r), q9 = 200 cos(pi r), random orientations, shifts
+/-5 px at 256 px, CTF 200 kV, SNR 0.1, phase-flipped, 128 px at 0.65 A/px): 14,055 training +
2,000 validation images (one stack, the validation particles drawn at random), 2,000 test images
and 50,000 more test images, each set with its own seed.

Per run (``--runs labels:arch[:seconds[:size]]``, e.g. ``truth:shared hemnma:separate hemnma:shared:200:64``):
- labels ``truth`` (the simulation's ground truth; no Mahalanobis filtering: it would only cut the
  two ends of the amplitude curve) or ``hemnma`` (the engine's HEMNMA elastic alignment of the
  training/validation stack, ``bench_hemnma.run_alignment``, filtered at 3.2 as in the paper; with
  ``--quick`` a coarse, fast HEMNMA, only to exercise the path on a CPU);
- training through the engine command (``deephemnma train``, images cached on the GPU) for
  ``seconds`` (the learning-rate schedule is fitted to the time);
- prediction of both test sets through the engine command (``deephemnma predict``: images read
  from the .mrcs, STAR and .npz written): end-to-end throughput;
- errors vs ground truth and vs HEMNMA labels (when HEMNMA ran): mean absolute amplitude error per
  mode and mean over modes 7-9, mean angular error (degrees), mean absolute shift error in x and y
  (A), and the paper's RMSD forms (A): amplitudes |dq| / sqrt(atoms), angles
  sqrt(mean_atoms |(R_pred - R_true) r|^2) over the reference atoms, shifts |d origin|.
Also: inference throughput from GPU memory (images prepared and cached on the GPU), CPU inference
throughput on a few hundred images, and optionally (``--sweep-batch``) training throughput per
batch size.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from _common import report  # noqa: E402
from bench_hemnma import errors, make_dataset, run_alignment  # noqa: E402
from cryoflex_scipion.engine.__main__ import main as engine_main  # noqa: E402
from cryoflex_scipion.engine.core import geometry as g  # noqa: E402
from cryoflex_scipion.engine.core.atoms import read_atoms  # noqa: E402
from cryoflex_scipion.engine.core.io.particles import read_particles  # noqa: E402
from cryoflex_scipion.engine.deephemnma import (DeepHEMNMANet, ParticleImages, TrainConfig,  # noqa: E402
                                                load_model, predict_images, rotate_images_exact)
from cryoflex_scipion.engine.deephemnma.augment import apply_turn, turn_factors  # noqa: E402
from cryoflex_scipion.engine.deephemnma.train import TrainStep, make_optimizer  # noqa: E402
from cryoflex_scipion.engine.nma.elastic import compute_modes, rtb_blocks  # noqa: E402

# Hamitouche & Jonic 2022, "Inferred vs. Ground-truth": Table 1 (2,000 test images), Table 3 (50,000),
# RMSD forms Tables 2 and 4 (A).  Paper training: 19 h per parameter type on 4 V100 (Suppl. Table 6);
# inference of 50,000 images: 5 min per type on one V100 (Table 7).
PAPER = {"test_2000": {"amplitude_mae_mean": 7.5, "angle_mean": 2.5, "shift": 0.2},
         "test_50000": {"amplitude_mae_mean": 7.8, "angle_mean": 2.6, "shift": 0.2},
         "rmsd_A": {"amplitudes": 0.4, "angles": 0.9, "shifts": 0.3}}
GOALS = {"training_minutes": 8.0, "inference_images_per_second": 10000.0}
MODES = [7, 8, 9]


def rmsd_forms(truth, result, coords):
    """The paper's errors as atomic RMSD (A), means over particles."""
    d_amp = np.linalg.norm(result["amplitudes"] - truth["amplitudes"], axis=1) / np.sqrt(len(coords))
    r_true = torch.as_tensor(g.euler_to_matrix(truth["euler"]))
    r_pred = torch.as_tensor(g.euler_to_matrix(result["euler"]))
    x = torch.as_tensor(coords, dtype=torch.float64)
    d_rot = []
    for s in range(0, len(r_true), 4096):  # |(R_pred - R_true) r|^2 averaged over atoms
        diff = r_pred[s:s + 4096] - r_true[s:s + 4096]
        d_rot.append(torch.sqrt(torch.einsum("nij,aj->nai", diff, x).pow(2).sum(-1).mean(-1)))
    d_shift = np.linalg.norm(result["origin_A"] - truth["origin_A"], axis=1)
    return {"amplitudes": float(d_amp.mean()), "angles": float(torch.cat(d_rot).mean()),
            "shifts": float(d_shift.mean())}


def score(truth, result, coords):
    e = errors(truth, result, len(coords))
    e["shift"] = 0.5 * (e["shift_x"] + e["shift_y"])
    e["rmsd_A"] = rmsd_forms(truth, result, coords)
    return e


def vs_paper(e, paper):
    return {k: {"ours": e[k], "paper": v, "met": bool(e[k] <= v)} for k, v in paper.items()}


def load_result(folder):
    with np.load(os.path.join(folder, "results.npz")) as r:
        return {k: r[k] for k in ("euler", "origin_A", "amplitudes", "quaternion")}


def predict_cli(model, star, out, device, batch):
    start = time.perf_counter()
    assert engine_main(["deephemnma", "predict", "--model", model, "--particles", star, "-o", out,
                        "--device", device, "--batch-size", str(batch), "--modes-list", "7-9"]) == 0
    wall = time.perf_counter() - start
    summary = json.load(open(os.path.join(out, "summary.json")))
    return load_result(out), {"wall_s": wall, "images_per_second_wall": summary["n_particles"] / wall,
                              "images_per_second_read_and_infer": summary["particles_per_second"]}


def gpu_memory_throughput(model, star, device, batches=(1024, 4096), repeats=3):
    """Images per second of the network alone: images prepared and cached on the device first."""
    net, scaler, meta = load_model(model, device)
    images = ParticleImages(read_particles(star), meta["working_size"])
    images.load(device, "device")
    cached = images.get(np.arange(len(images)), device)
    cuda = torch.device(device).type == "cuda"
    if cuda:
        net = net.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    out = {}
    for bs in batches:
        predict_images(net, cached[: 2 * bs], scaler, bs, cuda, cuda)  # warm-up
        if cuda:
            torch.cuda.synchronize()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            predict_images(net, cached, scaler, bs, cuda, cuda)
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        out["batch_%d" % bs] = len(cached) / min(times)
    out["best_images_per_second"] = max(out.values())
    out["n_images"] = len(cached)
    return out


def cpu_throughput(model, star, n=256, batch=64):
    threads = torch.get_num_threads()
    net, scaler, meta = load_model(model, "cpu")
    images = ParticleImages(read_particles(star), meta["working_size"])
    x = images.get(np.arange(min(n, len(images))), "cpu")
    predict_images(net, x[:batch], scaler, batch)
    t = time.perf_counter()
    predict_images(net, x, scaler, batch)
    return {"images_per_second": len(x) / (time.perf_counter() - t), "n_images": len(x), "threads": threads}


def batch_sweep(device, sizes, image_size, steps=20):
    """Training images per second of the full shared network (bf16, augmentation, Adam) per batch
    size, with the step launched eagerly and replayed as a CUDA graph (:class:`TrainStep`)."""
    out = {}
    device = torch.device(device)
    cuda = device.type == "cuda"
    torch.backends.cudnn.benchmark = cuda
    for bs in sizes:
        for graph in ([False, True] if cuda else [False]):
            torch.manual_seed(0)
            net = DeepHEMNMANet(3).to(device)
            if cuda:
                net = net.to(memory_format=torch.channels_last)
            step = TrainStep(net, make_optimizer(net, TrainConfig(), device), cuda, cuda, graph)
            x = torch.randn(bs, image_size, image_size, device=device)
            q = torch.nn.functional.normalize(torch.randn(bs, 4, device=device), dim=1)
            o, a = torch.randn(bs, 2, device=device), torch.randn(bs, 3, device=device)
            for i in range(steps + 5):
                if i == 5:
                    if cuda:
                        torch.cuda.synchronize()
                    t = time.perf_counter()
                alpha = torch.rand(bs, device=device) * 360
                qi, oi = apply_turn(q, o, *turn_factors(alpha))
                step(rotate_images_exact(x, alpha), {"amplitudes": a, "quaternion": qi, "shifts": oi})
            if cuda:
                torch.cuda.synchronize()
            out["batch_%d%s" % (bs, "_graph" if graph else "")] = steps * bs / (time.perf_counter() - t)
            del net, step
    return out


def save_partial(out, path):
    """The results so far (a run cut short by a time limit still leaves them)."""
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as fh:
            json.dump(out, fh, indent=2)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="small sets, small network, CPU: checks the pipeline")
    p.add_argument("--n-train", type=int, default=14055)
    p.add_argument("--n-val", type=int, default=2000)
    p.add_argument("--n-test", type=int, default=2000)
    p.add_argument("--n-test-big", type=int, default=50000)
    p.add_argument("--runs", nargs="+", default=["truth:shared"],
                   help="labels:arch[:seconds[:size]] per training run, labels truth|hemnma, arch shared|separate, "
                        "size the working size in px (default: the command's, 128)")
    p.add_argument("--train-seconds", type=float, default=300.0, help="default training time per run")
    p.add_argument("--epochs", type=int, default=1000, help="epoch cap (the time limit usually decides)")
    p.add_argument("--hemnma", action="store_true", help="HEMNMA on the 2,000 test images, to score against (and on "
                                                          "the training set, for a 'hemnma' run, which implies it)")
    p.add_argument("--hemnma-big", action="store_true", help="HEMNMA on the 50,000 test images too")
    p.add_argument("--train-args", default="", help="more arguments for 'deephemnma train'")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--predict-batch", type=int, default=2048)
    p.add_argument("--sweep-batch", default="", help="e.g. 128,256,512: training throughput per batch size")
    p.add_argument("--keep", default=None, help="folder to keep the data and models in (default: a temporary one)")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    if args.quick:
        args.n_train, args.n_val, args.n_test, args.n_test_big = 300, 60, 60, 120
        args.device = "cpu"
        args.train_args = (args.train_args + " --size 64 --blocks 1,1,1,1 --width 16 --features 128 "
                           "--hidden 64,32 --warmup-epochs 1").strip()
        args.batch_size, args.predict_batch = 64, 256
        args.runs = [r if r.count(":") >= 2 else r + ":30" for r in args.runs]
    device = torch.device(args.device)
    tmp = args.keep or tempfile.mkdtemp(prefix="cryoflex-deephemnma-")
    os.makedirs(tmp, exist_ok=True)
    runs = []
    for r in args.runs:
        parts = r.split(":")
        runs.append({"labels": parts[0], "arch": parts[1] if len(parts) > 1 else "shared",
                     "seconds": float(parts[2]) if len(parts) > 2 else args.train_seconds,
                     "size": int(parts[3]) if len(parts) > 3 else None})
    use_hemnma = args.hemnma or args.hemnma_big or any(r["labels"] == "hemnma" for r in runs)

    t0 = time.perf_counter()
    model = read_atoms(os.path.join(HERE, "data", "4akeA_heavy.npz"))
    modes = compute_modes(model.coords, 9, "RTB", 8.0, blocks=rtb_blocks(model.chains, model.resids, 10)).vectors[6:9]
    coords = model.coords - model.center()
    atoms_npz, modes_npy = os.path.join(tmp, "ref.npz"), os.path.join(tmp, "modes.npy")
    model.save(atoms_npz)
    np.save(modes_npy, modes)
    sets = {"trainval": (args.n_train + args.n_val, 0), "test_2000": (args.n_test, 1),
            "test_50000": (args.n_test_big, 2)}
    truth, timing = {}, {"modes_s": time.perf_counter() - t0}
    for name, (n, seed) in sets.items():
        t = time.perf_counter()
        truth[name] = make_dataset(model, modes, n, os.path.join(tmp, name), device, seed=seed, batch=500)
        timing["simulate_%s_s" % name] = time.perf_counter() - t
        print("simulated %s: %d images in %.1f s" % (name, n, timing["simulate_%s_s" % name]), flush=True)
    truth_npz = os.path.join(tmp, "trainval", "truth.npz")
    np.savez(truth_npz, euler=truth["trainval"]["euler"], origin_A=truth["trainval"]["origin_A"],
             amplitudes=truth["trainval"]["amplitudes"], mode_numbers=np.array(MODES))

    hemnma = {}
    # quick: a coarse, fast HEMNMA (CPU), only to exercise the path
    hemnma_args = ["--size", "48", "--search-size", "24", "--coarse-size", "0", "--starts", "1", "--search-levels",
                   "1", "--angular-step", "30", "--fine-iterations", "2"] if args.quick else []
    if use_hemnma:
        names = (["trainval"] if any(r["labels"] == "hemnma" for r in runs) else []) + ["test_2000"] + \
            (["test_50000"] if args.hemnma_big else [])
        for name in names:
            t = time.perf_counter()
            res, seconds, _ = run_alignment(os.path.join(tmp, name), atoms_npz, modes_npy, args.device, 256,
                                            hemnma_args)
            hemnma[name] = res
            timing["hemnma_%s_s" % name] = time.perf_counter() - t
            print("HEMNMA %s: %.1f s, angle error %.2f deg" % (
                name, seconds, score(truth[name], res, coords)["angle_mean"]), flush=True)

    out = {"benchmark": "deephemnma (DeepHEMNMA synthetic AdK)", "date": time.strftime("%Y-%m-%d %H:%M"),
           "device": torch.cuda.get_device_name(device) if device.type == "cuda"
           else "cpu (%d threads)" % torch.get_num_threads(), "torch": torch.__version__, "quick": args.quick,
           "n_train": args.n_train, "n_val": args.n_val, "n_test": args.n_test, "n_test_big": args.n_test_big,
           "atoms": len(model), "modes": MODES, "snr_measured": truth["trainval"]["snr"], "paper": PAPER,
           "goals": GOALS, "batch_size": args.batch_size, "lr": args.lr, "train_args": args.train_args,
           "timing": timing, "hemnma_vs_truth": {k: score(truth[k], v, coords) for k, v in hemnma.items()},
           "runs": []}
    save_partial(out, args.out)
    if args.sweep_batch:
        out["train_throughput_per_batch"] = batch_sweep(device, [int(b) for b in args.sweep_batch.split(",")], 128)
        print("training throughput per batch size:", out["train_throughput_per_batch"], flush=True)

    for k, run in enumerate(runs):
        folder = os.path.join(tmp, "run%d_%s_%s" % (k, run["labels"], run["arch"]))
        size_args = ["--size", str(run["size"])] if run["size"] else []
        shutil.rmtree(folder, ignore_errors=True)
        if run["labels"] == "hemnma":
            # HEMNMA numbers the modes within its modes file (1-3): these are modes 7-9
            hemnma_npz = os.path.join(tmp, "trainval", "hemnma_labels.npz")
            np.savez(hemnma_npz, euler=hemnma["trainval"]["euler"], origin_A=hemnma["trainval"]["origin_A"],
                     amplitudes=hemnma["trainval"]["amplitudes"], mode_numbers=np.array(MODES))
            source = ["--particles", os.path.join(tmp, "trainval", "particles.star"), "--labels-npz", hemnma_npz]
        else:
            # ground truth has no outliers; on this 1-D curve of amplitudes the 3.2 filter would drop
            # its two ends (3.9% of the particles), so it is off for truth labels
            source = ["--particles", os.path.join(tmp, "trainval", "particles.star"), "--labels-npz", truth_npz,
                      "--outlier-threshold", "0"]
        cmd = ["deephemnma", "train"] + source + [
            "--modes-list", "7-9", "--arch", run["arch"], "--time-limit", str(run["seconds"]),
            "--epochs", str(args.epochs), "--val-count", str(args.n_val), "--batch-size", str(args.batch_size),
            "--lr", str(args.lr), "--checkpoint-seconds", "60", "--device", args.device, "-o", folder,
            "--reference", "4AKE chain A heavy atoms, RTB modes 7-9"] + args.train_args.split() + size_args
        t = time.perf_counter()
        assert engine_main(cmd) == 0
        train_wall = time.perf_counter() - t
        summary = json.load(open(os.path.join(folder, "summary.json")))
        curves = json.load(open(os.path.join(folder, "curves.json")))
        model_pt = os.path.join(folder, "model.pt")
        entry = {"labels": run["labels"], "arch": run["arch"], "train_seconds_limit": run["seconds"],
                 "working_size": json.load(open(os.path.join(folder, "summary.json")))["working_size"],
                 "train_wall_s": train_wall, "training_s": summary["seconds"], "epochs": summary["epochs"],
                 "best_epoch": summary["best_epoch"], "n_train": summary["n_train"], "outliers": summary["outliers"],
                 "train_images_per_second": summary["train_samples_per_second"],
                 "n_parameters": summary["n_parameters"], "validation": summary["validation"],
                 "curve": [{k2: h.get(k2) for k2 in ("epoch", "lr", "train_loss", "val_loss", "val_amplitude_mae",
                                                      "val_angle_deg", "val_shift_A", "seconds")}
                           for h in curves[:: max(1, len(curves) // 25)] + curves[-1:]],
                 "tests": {}}
        for name in ("test_2000", "test_50000"):
            pred_dir = os.path.join(folder, "predict_" + name)
            result, speed = predict_cli(model_pt, os.path.join(tmp, name, "particles.star"), pred_dir, args.device,
                                        args.predict_batch)
            test = {"n": len(result["euler"]), "end_to_end": speed, "vs_truth": score(truth[name], result, coords)}
            test["vs_paper"] = vs_paper({"amplitude_mae_mean": test["vs_truth"]["amplitude_mae_mean"],
                                         "angle_mean": test["vs_truth"]["angle_mean"],
                                         "shift": test["vs_truth"]["shift"]}, PAPER[name])
            test["rmsd_vs_paper"] = vs_paper(test["vs_truth"]["rmsd_A"], PAPER["rmsd_A"])
            if name in hemnma:
                test["vs_hemnma"] = score(hemnma[name], result, coords)
            entry["tests"][name] = test
            v = test["vs_truth"]
            print("[%s/%s/%dpx] %s: amplitudes %s (mean %.2f; paper %.1f), angles %.2f deg (paper %.1f), "
                  "shifts %.3f/%.3f A (paper 0.2); end-to-end %.0f img/s"
                  % (run["labels"], run["arch"], entry["working_size"], name, np.round(v["amplitude_mae"], 2),
                     v["amplitude_mae_mean"], PAPER[name]["amplitude_mae_mean"], v["angle_mean"],
                     PAPER[name]["angle_mean"], v["shift_x"], v["shift_y"], speed["images_per_second_wall"]),
                  flush=True)
            shutil.rmtree(pred_dir, ignore_errors=True)
        if k == 0:
            star_big = os.path.join(tmp, "test_50000", "particles.star")
            if device.type == "cuda":
                entry["gpu_memory_inference"] = gpu_memory_throughput(model_pt, star_big, device)
                print("inference from GPU memory:", entry["gpu_memory_inference"], flush=True)
            entry["cpu_inference"] = cpu_throughput(model_pt, os.path.join(tmp, "test_2000", "particles.star"),
                                                    n=64 if args.quick else 256)
            print("CPU inference:", entry["cpu_inference"], flush=True)
        entry["goals"] = {"training_minutes": entry["training_s"] / 60.0,
                          "training_within_goal": entry["training_s"] <= 60 * GOALS["training_minutes"],
                          "inference_goal_met": entry.get("gpu_memory_inference", {}).get(
                              "best_images_per_second", 0.0) >= GOALS["inference_images_per_second"]}
        out["runs"].append(entry)
        save_partial(out, args.out)
    out["timing"]["total_s"] = time.perf_counter() - t0
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    report(out, args.out)


if __name__ == "__main__":
    main()
