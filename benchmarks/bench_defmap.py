"""DEFMap: leave-one-protein-out accuracy on simulated maps, the default model, and prediction speed.

    python benchmarks/bench_defmap.py --prepare                 # once, where ProDy is: PDB -> .npz
    python benchmarks/bench_defmap.py --model-out benchmarks/results/defmap_model_5A.pt \\
        --out benchmarks/results/defmap_h200.json               # GPU, one call of about 7-8 minutes
    python benchmarks/bench_defmap.py --quick --device cpu      # end-to-end check on a CPU in ~2 minutes

Needs only torch, numpy and scipy (no mrcfile, no ProDy): the atomic models are the .npz of
benchmarks/data/defmap/ and every map is simulated here (:mod:`engine.defmap.simulate`: Gaussian
atoms blurred by their B-factors, 5 A).  Labels: per-atom log10 RMSF = log10 sqrt(3B / 8 pi^2).

1. Speed (first, so the host-memory peak is the prediction's): a 160^3 map (1.5 A voxels) holding
   the proteins side by side, predicted with a model of random weights (the time does not depend
   on them): seconds, voxels per second, process host-memory peak (getrusage); a 400^3 map
   streamed through (seconds, peak GPU memory).
2. Leave one protein out (the two AdK states form one group): train on the others for the same
   number of epochs (--fold-epochs; the best validation epoch is kept), predict the held-out map; atom-level Pearson r of predicted vs label log10 RMSF, the same for the raw
   map intensity (baseline; expected negative, |r| is what compares), residue-level r of
   Dynamics^DEFMap; means over the held-out proteins.
3. The default model: trained on every protein (--final-epochs), saved with the figures of 2 in
   its metadata (float16 weights with --half: the file shipped in the package), read back from
   the file and scored on the real maps.
4. Real maps (no bound in the issue): EMD-2566 around chain 9 of 3J6B and ProDy's 1ake.mrc,
   against the B-factors of their models; scored with the model of the fold that held that
   protein out and with the default model (trained on simulated maps of these structures).
--deadline is a safety net: trainings are cut short only when the time would run out.
"""
import argparse
import json
import os
import resource
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from _common import report  # noqa: E402
from cryoflex_scipion.engine.core.atoms import electrons, read_atoms  # noqa: E402
from cryoflex_scipion.engine.defmap.grid import Grid  # noqa: E402
from cryoflex_scipion.engine.defmap.labels import bfactor_rmsf  # noqa: E402
from cryoflex_scipion.engine.core.io.mrc import read_map  # noqa: E402
from cryoflex_scipion.engine.defmap.model_file import load_model, save_model  # noqa: E402
from cryoflex_scipion.engine.defmap.network import DefmapNet  # noqa: E402
from cryoflex_scipion.engine.defmap.pipeline import residue_table, run_prediction  # noqa: E402
from cryoflex_scipion.engine.defmap.simulate import grid_around, simulate_map  # noqa: E402
from cryoflex_scipion.engine.defmap.train import TrainConfig, TrainingSet, make_item, pearson, train  # noqa: E402

DATA = os.path.join(HERE, "data", "defmap")
SHARED = "/work/shared/data"
# name -> (source PDB under SHARED, group for leave-one-out)
PROTEINS = {"1ake": ("adk/pdb1ake.pdb", "adk"), "4ake": ("adk/adk_open.pdb", "adk"),
            "1ubi": ("adk/pdb1ubi.pdb", "1ubi"), "3enl": ("adk/pdb3enl.pdb", "3enl"),
            "3hsy": ("adk/pdb3hsy.pdb", "3hsy"), "3mht": ("adk/pdb3mht.pdb", "3mht"),
            "6flr": ("adk/pdb6flr.pdb", "6flr"), "3j6b_9": ("maps/3J6B_9.pdb", "3j6b_9")}
QUICK = ["1ake", "1ubi", "3j6b_9"]
ROOT = os.path.dirname(HERE)
# real map -> (file in the repository, protein whose model and B-factors it is scored against)
REAL_MAPS = {"EMD-2566 (3J6B chain 9)": ("tests/data/defmap/2566_3J6B_9.mrc", "3j6b_9"),
             "ProDy 1ake.mrc (1AKE chain A)": ("tests/data/1ake.mrc", "1ake")}
RESOLUTION = 5.0
PADDING = 15.0


def prepare():
    """PDB -> compressed .npz of the heavy protein atoms (needs ProDy; run once, off the GPU node)."""
    from dataclasses import fields
    from cryoflex_scipion.engine.core.atoms import AtomModel
    os.makedirs(DATA, exist_ok=True)
    for name, (src, _) in PROTEINS.items():
        model = read_atoms(os.path.join(SHARED, src), "protein and not hydrogen")
        np.savez_compressed(os.path.join(DATA, name + ".npz"), **{f.name: getattr(model, f.name)
                                                                  for f in fields(AtomModel)})
        print("%s: %d atoms, B %.1f-%.1f" % (name, len(model), model.bfactors.min(), model.bfactors.max()))


def load_proteins(names):
    return {n: read_atoms(os.path.join(DATA, n + ".npz")) for n in names}


def simulate(model, device, noise=0.0, seed=0):
    """The map of one protein; atoms without a B-factor (0: placeholder) are blurred by the median B."""
    grid = grid_around(model.coords, 1.5, PADDING)
    b = model.bfactors
    b = np.where(b > 0, b, np.median(b[b > 0]))
    volume = simulate_map(model.coords, b, grid, RESOLUTION, electrons(model.elements), device=device,
                          noise=noise, seed=seed)
    return volume, grid


def packed_map(models, size, device, copies_per_axis=None):
    """A ``size``^3 map (1.5 A) with the proteins, centred, on a lattice of cells (copies cycle through them)."""
    n = copies_per_axis or int(np.ceil(len(models) ** (1 / 3)))
    cell = size * 1.5 / n
    coords, bfac, weights = [], [], []
    ordered = list(models.values())
    for k, (i, j, l) in enumerate(np.ndindex(n, n, n)):
        m = ordered[k % len(ordered)]
        centre = (np.array([i, j, l]) + 0.5) * cell
        coords.append(m.coords - m.coords.mean(0) + centre)
        bfac.append(m.bfactors)
        weights.append(electrons(m.elements))
    grid = Grid((size,) * 3, 1.5, (0.0, 0.0, 0.0))
    volume = simulate_map(np.concatenate(coords), np.concatenate(bfac), grid, RESOLUTION, np.concatenate(weights),
                          device=device)
    return volume, grid, sum(len(c) for c in coords)


def speed(models, device, size, big_size, batch_size, amp):
    torch.manual_seed(0)
    net = DefmapNet().to(device).eval()
    meta = {"resolution": RESOLUTION, "label_mean": 0.0, "label_std": 1.0}
    out = {}
    runs = (("map_%d_cold" % size, size, None), ("map_%d_warm" % size, size, None), ("map_%d" % big_size, big_size, 3))
    for label, n, copies in runs:
        volume, grid, n_atoms = packed_map(models, n, device, copies)
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        result = run_prediction(net, meta, volume, grid.apix, grid.origin, device=device, batch_size=batch_size,
                                amp=amp)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t
        out[label] = {"shape": [n] * 3, "atoms": n_atoms, "kept_voxels": result.n_kept,
                      "kept_fraction": result.n_kept / float(n) ** 3, "seconds": seconds,
                      "prepare_s": result.seconds["prepare"], "network_s": result.seconds["network"],
                      "voxels_per_s": result.n_kept / result.seconds["network"],
                      "host_peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0 ** 2}
        if device.type == "cuda":
            out[label]["gpu_peak_gb"] = torch.cuda.max_memory_allocated() / 1024.0 ** 3
        print("speed %s: %d kept voxels in %.1f s (%.0f voxels/s), host peak %.2f GB" % (
            label, result.n_kept, seconds, out[label]["voxels_per_s"], out[label]["host_peak_gb"]), flush=True)
        del volume, result
    return out


class Budget:
    """A safety net: seconds the next training may take so that the remaining ones (counted in
    epochs) still end before the deadline.  Normal runs never reach it."""

    def __init__(self, seconds, reserve):
        self.start, self.seconds, self.reserve = time.time(), seconds, reserve

    def next(self, epochs, remaining_epochs):
        left = self.seconds - (time.time() - self.start) - self.reserve
        return max(5.0, left * epochs / max(remaining_epochs, 1))


def fit(items, config, device):
    tset = TrainingSet(items, val_fraction=0.1, seed=config.seed)
    t = time.perf_counter()
    net, history = train(tset, config, device)
    return net, tset, history, time.perf_counter() - t


def scores(model, result):
    """Atom- and residue-level Pearson r of a prediction, and of the raw map intensity, against the
    model's B-factor labels."""
    atoms = result.atoms
    residues = residue_table(model, atoms)
    label_z = [r["label_z"] for r in residues]
    return {"atoms": len(model), "r_atoms": pearson(atoms["pred_log10_rmsf"], atoms["label_log10_rmsf"]),
            "r_atoms_intensity": pearson(atoms["intensity"], atoms["label_log10_rmsf"]),
            "r_residues": pearson([r["dynamics_defmap"] for r in residues], label_z),
            "r_residues_intensity": pearson([r["intensity_z"] for r in residues], label_z),
            "rmse_log10": float(np.sqrt(np.nanmean((atoms["pred_log10_rmsf"] - atoms["label_log10_rmsf"]) ** 2)))}


def held_out(net, tset, model, volume, grid, device, batch_size, amp):
    meta = {"resolution": RESOLUTION, "label_mean": tset.label_mean, "label_std": tset.label_std}
    result = run_prediction(net, meta, volume, grid.apix, grid.origin, model.coords, model.bfactors, device=device,
                            batch_size=batch_size, amp=amp)
    return scores(model, result)


def real_map_scores(net, meta, models, device, batch_size, amp):
    """:func:`scores` of the prediction on each real map against its model's B-factors."""
    out = {}
    for label, (path, name) in REAL_MAPS.items():
        if name not in models:
            continue
        volume, info = read_map(os.path.join(ROOT, path))
        model = models[name]
        result = run_prediction(net, meta, volume, info.apix, info.origin, model.coords, model.bfactors,
                                device=device, batch_size=batch_size, amp=amp)
        out[label] = {"map": path, "shape_zyx": list(volume.shape), "apix": info.apix,
                      "atoms_inside_fraction": result.inside_fraction, "kept_voxels": result.n_kept,
                      # frame check: >> 0 when model and map are aligned
                      "mean_map_z_at_atoms": float(np.nanmean(result.atoms["intensity"])), **scores(model, result)}
        print("  real map %s: r atoms %.3f (intensity %.3f), r residues %.3f" % (
            label, out[label]["r_atoms"], out[label]["r_atoms_intensity"], out[label]["r_residues"]), flush=True)
    return out


def cli_timing(models, device, size, out_dir):
    """Wall time of ``defmap predict`` as a user runs it (new process: Python, CUDA and cuDNN start-up,
    the shipped model read from disk, the map read and written), on the packed ``size``^3 map."""
    import subprocess
    import tempfile
    from cryoflex_scipion.engine.core.io.mrc import write_map
    volume, grid, n_atoms = packed_map(models, size, torch.device("cpu"))
    folder = out_dir or tempfile.mkdtemp()
    path = os.path.join(folder, "packed_%d.mrc" % size)
    write_map(path, volume, grid.apix, grid.origin)
    out = {}
    for run in ("first", "second"):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cryoflex_scipion.engine", "defmap", "predict", "--map", path, "-o",
                        os.path.join(folder, "cli_" + run), "--device", device.type], check=True,
                       stdout=subprocess.DEVNULL, cwd=ROOT)
        wall = time.perf_counter() - t
        with open(os.path.join(folder, "cli_" + run, "summary.json")) as fh:
            summary = json.load(fh)
        out[run] = {"wall_s": wall, "engine_seconds": summary["seconds"], "kept_voxels": summary["n_kept_voxels"]}
        print("CLI defmap predict %d^3 (%s run): %.1f s wall, engine %.1f s" % (size, run, wall,
                                                                                 summary["seconds"]["total"]),
              flush=True)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prepare", action="store_true", help="convert the PDB files to .npz and stop")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="3 proteins, tiny training and maps (CPU check)")
    p.add_argument("--fold-epochs", type=int, default=45, help="epochs of every leave-one-out training")
    p.add_argument("--final-epochs", type=int, default=90, help="epochs of the default model's training")
    p.add_argument("--deadline", type=float, default=540.0, help="seconds for the whole benchmark (safety net)")
    p.add_argument("--patience", type=int, default=1000,
                   help="early stopping (epochs without a better validation loss); default: off, so every "
                        "fold trains equally long and the best validation epoch is kept")
    p.add_argument("--half", action="store_true", help="store the default model's weights as float16")
    p.add_argument("--samples-per-epoch", type=int, default=32768)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast on CUDA")
    p.add_argument("--noise", type=float, default=0.0, help="noise of the simulated maps (x signal std)")
    p.add_argument("--speed-size", type=int, default=160)
    p.add_argument("--big-size", type=int, default=400)
    p.add_argument("--predict-batch", type=int, default=8192)
    p.add_argument("--skip-lopo", action="store_true")
    p.add_argument("--cli-only", action="store_true",
                   help="only time the 'defmap predict' command on the --speed-size map (new process, shipped model)")
    p.add_argument("--model-out", default=None, help="where to save the model trained on all proteins")
    p.add_argument("--out", default=None, help="JSON report")
    args = p.parse_args()
    if args.prepare:
        prepare()
        return
    if args.quick:
        args.samples_per_epoch, args.speed_size, args.big_size, args.predict_batch = 256, 32, 40, 512
        args.fold_epochs, args.final_epochs = min(args.fold_epochs, 3), min(args.final_epochs, 4)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    t0 = time.time()
    names = QUICK if args.quick else list(PROTEINS)
    models = load_proteins(names)
    report_data = {"benchmark": "DEFMap (simulated 5 A maps, B-factor labels)", "date": time.strftime("%Y-%m-%d %H:%M"),
                   "device": torch.cuda.get_device_name(device) if device.type == "cuda" else
                   "cpu (%d threads)" % torch.get_num_threads(), "torch": torch.__version__,
                   "settings": {k: v for k, v in vars(args).items() if k not in ("prepare",)}, "proteins": {}}
    if args.cli_only:
        report_data["cli"] = cli_timing(models, device, args.speed_size, None)
        report(report_data, args.out)
        return
    report_data["speed"] = speed(models, device, args.speed_size, args.big_size, args.predict_batch, args.amp)

    maps, items = {}, {}
    for n, m in models.items():
        maps[n] = simulate(m, device, args.noise, seed=len(maps))
        volume, grid = maps[n]
        items[n] = make_item(n, volume, grid.apix, grid.origin, m.coords, bfactor_rmsf(m.bfactors), RESOLUTION, device)
        report_data["proteins"][n] = {"atoms": len(m), "map_shape": list(grid.shape),
                                      "labelled_voxels": len(items[n].labels), "group": PROTEINS[n][1]}
    print("collection: %d proteins, %d labelled voxels (%.1f s)" % (len(items), sum(len(i.labels) for i in
                                                                                   items.values()), time.time() - t0))
    config = TrainConfig(epochs=args.fold_epochs, patience=args.patience, batch_size=args.batch_size, lr=args.lr,
                         samples_per_epoch=args.samples_per_epoch, amp=args.amp)
    groups = sorted({PROTEINS[n][1] for n in names})
    budget = Budget(args.deadline - (time.time() - t0), reserve=25.0)
    folds, real_lopo = [], {}
    for k, g in enumerate([] if args.skip_lopo else groups):
        config.time_limit = budget.next(args.fold_epochs, (len(groups) - k) * args.fold_epochs + args.final_epochs)
        train_names = [n for n in names if PROTEINS[n][1] != g]
        net, tset, history, seconds = fit([items[n] for n in train_names], config, device)
        for n in (n for n in names if PROTEINS[n][1] == g):
            fold = {"held_out": n, "train": train_names, "train_s": seconds, "epochs": len(history),
                    "samples": int(sum(h["samples"] for h in history)), "best_val_r": max(h["val_r"] for h in history),
                    **held_out(net, tset, models[n], *maps[n], device, args.predict_batch, args.amp)}
            folds.append(fold)
            print("held out %s: r atoms %.3f (intensity %.3f), r residues %.3f (intensity %.3f); %d epochs in %.0f s"
                  % (n, fold["r_atoms"], fold["r_atoms_intensity"], fold["r_residues"],
                     fold["r_residues_intensity"], fold["epochs"], seconds), flush=True)
        held = {n: models[n] for n in names if PROTEINS[n][1] == g}
        meta = {"resolution": RESOLUTION, "label_mean": tset.label_mean, "label_std": tset.label_std}
        real_lopo.update(real_map_scores(net, meta, held, device, args.predict_batch, args.amp))
    lopo = {"folds": folds}
    if folds:
        for key in ("r_atoms", "r_atoms_intensity", "r_residues", "r_residues_intensity", "rmse_log10"):
            lopo["mean_" + key] = float(np.mean([f[key] for f in folds]))
        print("leave-one-out means: r atoms %.3f (intensity %.3f), r residues %.3f (intensity %.3f)" % (
            lopo["mean_r_atoms"], lopo["mean_r_atoms_intensity"], lopo["mean_r_residues"],
            lopo["mean_r_residues_intensity"]))
    report_data["leave_one_out"] = lopo
    report_data["real_maps_held_out_model"] = real_lopo

    config.epochs = args.final_epochs
    config.time_limit = budget.next(args.final_epochs, args.final_epochs)
    net, tset, history, seconds = fit(list(items.values()), config, device)
    best = min(history, key=lambda h: h["val_loss"])
    final = {"train_s": seconds, "epochs": len(history), "best_epoch": best["epoch"], "val_r": best["val_r"],
             "val_loss_standardised": best["val_loss"], "label_mean": tset.label_mean, "label_std": tset.label_std,
             "curve": history}
    report_data["final_model"] = final
    if args.model_out:
        meta = {"resolution": RESOLUTION, "voxel_size": 1.5, "label_mean": tset.label_mean,
                "label_std": tset.label_std, "label_source": "B-factors, log10 sqrt(3B/8pi^2)",
                "label_rule": "nearest atom, voxels containing an atom",
                "training_set": ["%s (simulated %g A map, padding %g A, noise %g)"
                                 % (n, RESOLUTION, PADDING, args.noise) for n in names],
                "lowpass": "gaussian exp(-k^2/(2 kc^2)), kc = 1/resolution",
                "normalisation": "z-score over the resampled box, negatives set to 0",
                "threshold_rule": "standardised value > 1.0",
                "validation": {"random_voxels_fraction": 0.1, "best_epoch": best["epoch"], "val_r": best["val_r"],
                               "leave_one_protein_out": {k: v for k, v in lopo.items() if k != "folds"}},
                "benchmark": {"device": report_data["device"], "date": report_data["date"],
                              "train_s": seconds, "settings": report_data["settings"]}}
        save_model(args.model_out, net, meta, half=args.half)
        report_data["model_out"] = args.model_out
        report_data["model_file_mb"] = os.path.getsize(args.model_out) / 1e6
        print("model saved to %s (%.1f MB)" % (args.model_out, report_data["model_file_mb"]))
        net, meta = load_model(args.model_out, RESOLUTION, device)  # score what users get
        final["held_in_r_atoms_from_file"] = {
            n: held_out(net, tset, models[n], *maps[n], device, args.predict_batch, args.amp)["r_atoms"]
            for n in names}
    else:
        meta = {"resolution": RESOLUTION, "label_mean": tset.label_mean, "label_std": tset.label_std}
    report_data["real_maps_default_model"] = real_map_scores(net, meta, models, device, args.predict_batch, args.amp)
    report_data["total_s"] = time.time() - t0
    report(report_data, args.out)


if __name__ == "__main__":
    main()
