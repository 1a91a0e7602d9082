"""Landscape accuracy: group reconstructions of the synthetic AdK experiment against ground truth.

    python benchmarks/bench_landscape.py --n 20000 --device cuda --out benchmarks/results/landscape_h200.json
    python benchmarks/bench_landscape.py --speed-only --points 1000000   # PCA + grouping time (CPU)

Particles as in bench_hemnma.py (AdK, modes 7-9 on a curve, SNR 0.1, phase-flipped) but kept at
256 px and 0.325 A/px.  HEMNMA estimates amplitudes and poses (working size 128 px); the landscape
command makes the PCA of the estimated amplitudes, ten k-means groups, keeps each group's dense
half (--core-fraction 0.5), and reconstructs every group at 256 px from the estimated poses.
Each group map is compared by FSC with the map of the group's ground-truth centroid (the
reference deformed by the mean true amplitudes of its members, made with the same atoms as the
particles).  The same groups reconstructed from the true poses give the reference figure.
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from _common import report  # noqa: E402
from bench_hemnma import make_dataset  # noqa: E402
from cryoflex_scipion.engine.__main__ import main as engine_main  # noqa: E402
from cryoflex_scipion.engine.core.atoms import deform, read_atoms  # noqa: E402
from cryoflex_scipion.engine.core.io.mrc import read_map  # noqa: E402
from cryoflex_scipion.engine.core.io.particles import read_particles  # noqa: E402
from cryoflex_scipion.engine.core.metrics import fsc, resolution_at  # noqa: E402
from cryoflex_scipion.engine.core.projection import gaussian_volume  # noqa: E402
from cryoflex_scipion.engine.nma.elastic import compute_modes, rtb_blocks  # noqa: E402

PAPER = {"groups_0.5_A": [3.0, 4.0], "subgroups_inferred_0.5_A": [3.7, 4.4], "subgroups_ground_truth_0.5_A": [3.6, 3.7]}


def speed(points, k=10):
    from cryoflex_scipion.engine.landscape.groups import gmm_groups, kmeans_groups
    from cryoflex_scipion.engine.landscape.reduce import fit_pca
    rng = np.random.default_rng(0)
    r = rng.uniform(0, 1, points)
    feats = np.stack([-200 * r, 200 * np.sin(np.pi * r), 200 * np.cos(np.pi * r)], -1) + rng.normal(0, 5, (points, 3))
    out = {}
    t = time.perf_counter()
    reduced = fit_pca(feats, 2).transform(feats)
    out["pca_s"] = time.perf_counter() - t
    t = time.perf_counter()
    kmeans_groups(reduced, k)
    out["kmeans_s"] = time.perf_counter() - t
    t = time.perf_counter()
    gmm_groups(reduced, k)
    out["gmm_s"] = time.perf_counter() - t
    out["points"] = points
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--groups", type=int, default=10)
    p.add_argument("--core-fraction", type=float, default=0.5)
    p.add_argument("--speed-only", action="store_true")
    p.add_argument("--points", type=int, default=1000000)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    if args.speed_only:
        report({"benchmark": "landscape speed (CPU)", "date": time.strftime("%Y-%m-%d %H:%M"),
                "threads": torch.get_num_threads(), **speed(args.points)}, args.out)
        return
    device = torch.device(args.device)
    tmp = tempfile.mkdtemp(prefix="cryoflex-landscape-")
    model = read_atoms(os.path.join(HERE, "data", "4akeA_heavy.npz"))
    modes = compute_modes(model.coords, 9, "RTB", 8.0, blocks=rtb_blocks(model.chains, model.resids, 10)).vectors[6:9]
    model.save(os.path.join(tmp, "ref.npz"))
    np.save(os.path.join(tmp, "modes.npy"), modes)
    t0 = time.perf_counter()
    truth = make_dataset(model, modes, args.n, tmp, device, batch=500, out_size=256)
    timings = {"simulate_s": time.perf_counter() - t0}

    t = time.perf_counter()
    assert engine_main(["hemnma", "--particles", os.path.join(tmp, "particles.star"), "--atoms",
                        os.path.join(tmp, "ref.npz"), "--modes", os.path.join(tmp, "modes.npy"), "--ctf-mode",
                        "phase-flipped", "-o", os.path.join(tmp, "hemnma"), "--device", args.device,
                        "--batch-size", "1024"]) == 0
    timings["hemnma_s"] = time.perf_counter() - t
    with np.load(os.path.join(tmp, "hemnma", "results.npz")) as r:
        estimated = r["amplitudes"]
    np.save(os.path.join(tmp, "features.npy"), estimated)

    # The same particles with their true poses, for the reference reconstructions.
    true_table = read_particles(os.path.join(tmp, "particles.star"))
    true_table.euler, true_table.origin_A = truth["euler"], truth["origin_A"]
    true_table.to_star(os.path.join(tmp, "particles_true.star"))

    results = {}
    for label, star in (("estimated", os.path.join(tmp, "hemnma", "particles.star")),
                        ("true_poses", os.path.join(tmp, "particles_true.star"))):
        out = os.path.join(tmp, "landscape_" + label)
        t = time.perf_counter()
        assert engine_main(["landscape", "--features", os.path.join(tmp, "features.npy"), "-o", out, "--k",
                            str(args.groups), "--core-fraction", str(args.core_fraction), "--particles", star,
                            "--ctf-mode", "phase-flipped", "--device", args.device, "--batch-size", "512"]) == 0
        timings["landscape_%s_s" % label] = time.perf_counter() - t
        groups = np.load(os.path.join(out, "landscape.npz"))["groups"]
        coords = torch.as_tensor(model.coords - model.center(), device=device, dtype=torch.float32)
        vecs = torch.as_tensor(modes, device=device, dtype=torch.float32)
        per_group = []
        for g in np.unique(groups[groups >= 0]):
            members = groups == g
            mean_true = truth["amplitudes"][members].mean(0)
            centroid = deform(coords, vecs, torch.as_tensor(mean_true, device=device, dtype=torch.float32)[None])[0]
            ref_map = gaussian_volume(centroid, torch.as_tensor(model.weights, device=device, dtype=torch.float32),
                                      torch.as_tensor(truth["sigma_atoms"], device=device), 256, 0.325)
            vol, _ = read_map(os.path.join(out, "group_%d" % (g + 1), "map.mrc"))
            curve = fsc(torch.as_tensor(vol), ref_map.cpu())
            spread = np.linalg.norm(truth["amplitudes"][members] - mean_true, axis=1).mean() / np.sqrt(len(model))
            per_group.append({"group": int(g + 1), "size": int(members.sum()),
                              "fsc_0.5_A": resolution_at(curve, 256, 0.325, 0.5),
                              "fsc_0.143_A": resolution_at(curve, 256, 0.325, 0.143),
                              "true_mean_amplitudes": mean_true.tolist(), "within_group_rmsd_A": float(spread)})
        results[label] = per_group
        res = [g["fsc_0.5_A"] for g in per_group]
        print("%s poses: FSC 0.5 against the true centroid maps %.2f-%.2f A (median %.2f) over %d groups of %s "
              "particles" % (label, min(res), max(res), float(np.median(res)), len(res),
                             [g["size"] for g in per_group]), flush=True)
    out = {"benchmark": "landscape (synthetic AdK, DeepHEMNMA Figure 7)", "date": time.strftime("%Y-%m-%d %H:%M"),
           "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "n_particles": args.n,
           "groups": args.groups, "core_fraction": args.core_fraction, "timings": timings, "results": results,
           "paper": PAPER, "speed_1M": speed(1000000)}
    report(out, args.out)


if __name__ == "__main__":
    main()
