"""HEMNMA on real motion: particles from the DIMS closed -> open AdK transition (not from normal modes).

Every frame of the molecular-dynamics trajectory (benchmarks/data/adk1d/adk_dims_heavy.npz, heavy atoms,
superposed on frame 0) is imaged with random poses, shifts and CTF at a given SNR; the reference is frame 0
with its RTB modes (computed here, cutoff 8 A, 10 residues per block).  The elastic aligner (global search +
refinement, as the ``hemnma`` command runs it) gets modes 7-9, 7-12 and 7-16.  Scores, per SNR and mode set:

- Spearman rho between the first principal component of the estimated amplitudes and the frame index (the
  ideal amplitudes, the displacement projected on the modes, are reported beside it);
- per fifth of the transition: mean and median angular error, % of particles beyond 10 deg, mean amplitude
  error against the ideal amplitudes, mean cost;
- particles/s of the alignment (images on the device, after a warm-up batch).

With ``--oracle-references K`` every particle is also aligned against K true frames spread along the
transition (each with its own RTB modes; the best cost wins, amplitudes mapped back onto frame 0's modes):
the ceiling of any multi-reference (re-centred) alignment whose references were exact.  With
``--oracle-in-span`` the references are the frames' projections on frame 0's modes instead (re-centring
along the modes only); with ``--oracle-morph`` they are the two end frames and linear interpolations between
them (what a user who knows both end structures has), with ``--oracle-transported-modes`` every reference
moves along frame 0's modes.

With ``--old-grid`` the 7-12 run is repeated with the global-search grid before issue 17 (2 levels for 5-6
modes, no undeformed template), for the before/after comparison.

    python benchmarks/bench_hemnma_real.py --device cuda --per-frame 50 --out results/hemnma_real.json
"""
import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from cryoflex_scipion.engine.core import geometry as g  # noqa: E402
from cryoflex_scipion.engine.core.simulation import (Conformations, SimulationSettings, add_noise,  # noqa: E402
                                                     render_batch, sample_parameters)
from cryoflex_scipion.engine.hemnma.align import AlignmentSettings, ElasticAligner  # noqa: E402
from cryoflex_scipion.engine.hemnma.model import ElasticReference  # noqa: E402
from cryoflex_scipion.engine.hemnma.pipeline import residue_groups  # noqa: E402
from cryoflex_scipion.engine.hemnma.quality import poor_fit  # noqa: E402
from cryoflex_scipion.engine.hemnma.references import MultiReferenceAligner, reference_path  # noqa: E402
from cryoflex_scipion.engine.nma.elastic import compute_modes, rtb_blocks  # noqa: E402
from cryoflex_scipion.engine.yardstick.scoring import latent_correlations  # noqa: E402
from cryoflex_scipion.engine.yardstick.trajectory import load_trajectory  # noqa: E402

DATA = os.path.join(HERE, "data", "adk1d")


def old_grid(self):
    """The search grid before issue 17: fewer levels until all combinations fit in 81."""
    m, levels = self.reference.n_modes, max(1, self.settings.search_levels)
    if m == 0 or levels == 1:
        return np.zeros((1, m))
    while levels > 1 and levels ** m > 81:
        levels -= 1
    values = np.linspace(-0.6, 0.6, levels) * self.amplitude_bound if levels > 1 else np.zeros(1)
    return np.stack(np.meshgrid(*([values] * m), indexing="ij"), -1).reshape(-1, m)


def simulate(traj, ref, args, snr, device):
    k = len(traj.coords)
    n = k * args.per_frame
    conf = Conformations(ref.coords, ref.weights, frames=traj.coords, center=ref.center())
    settings = SimulationSettings(n_particles=n, size=args.box, apix=args.apix, snr=snr, max_shift=args.max_shift,
                                  defocus_min=10000, defocus_max=25000, seed=args.seed, sigma=1.0)
    params = sample_parameters(settings, conf)
    params["labels"] = np.repeat(np.arange(k), args.per_frame)  # every frame equally
    images = []
    gen = torch.Generator(device=device).manual_seed(args.seed + 1)
    for start in range(0, n, 512):
        idx = np.arange(start, min(n, start + 512))
        proj, ctf = render_batch(conf, settings, params, idx, device)
        noisy, _, _ = add_noise(proj, ctf, snr, 0.5, gen)
        images.append(noisy.float().cpu().numpy())
    return np.concatenate(images), params


def align_oracle(images, params, ref, traj, all_modes, first, last, n_refs, args, device, in_span=False, morph=False,
                 transported=False):
    """Align against ``n_refs`` true frames (each with its own RTB modes ``first``-``last``), keep each
    particle's best cost; amplitudes = the chosen conformation's displacement from frame 0 on frame 0's modes."""
    frames = np.unique(np.linspace(0, len(traj.coords) - 1, n_refs).round().astype(int))
    modes0 = all_modes[first - 1:last]
    # one mask for all references (the largest), or the costs would not be comparable
    mask_radius = 1.2 * max(np.linalg.norm(traj.coords[k] - ref.center(), axis=1).max() for k in frames) + 2.0
    runs = []
    for k in frames:
        coords = traj.coords[k]
        if morph:  # the two end frames only, and linear interpolations between them
            t = k / (len(traj.coords) - 1)
            coords = (1 - t) * traj.coords[0] + t * traj.coords[-1]
        if in_span:  # the frame's displacement projected on frame 0's modes: what in-span re-centring could reach
            coords = ref.coords + np.einsum("m,mad->ad", np.einsum("ad,mad->m", coords - ref.coords, modes0), modes0)
        modes = modes0 if transported else \
            compute_modes(coords, last, "RTB", 8.0, blocks=rtb_blocks(ref.chains, ref.resids, 10)).vectors[first - 1:]
        frame_ref = dataclasses.replace(ref, coords=coords)
        out = align(images, params, frame_ref, modes, args, device, centre=ref.center(), mask_radius=mask_radius)
        displacement = coords[None] - ref.coords[None] + np.einsum("nm,mad->nad", out["amplitudes"], modes)
        out["amplitudes"] = np.einsum("nad,mad->nm", displacement, modes0)
        runs.append(out)
    best = np.stack([r["cost"] for r in runs]).argmin(0)
    pick = lambda key: np.stack([r[key] for r in runs])[best, np.arange(len(best))]  # noqa: E731
    out = {key: pick(key) for key in ("euler", "origin_A", "amplitudes", "cost", "fit_quality", "fit_quality_error")}
    out["particles_per_second"] = 1.0 / sum(1.0 / r["particles_per_second"] for r in runs)
    out["n_templates"] = runs[0]["n_templates"]
    out["reference_frames"] = frames.tolist()
    return out


def align_path(images, params, ref, traj, modes, intermediates, args, device):
    """The engine's multi-reference alignment (``hemnma --other-references``): frame 0 and the last frame
    (what a user knowing both end structures has), ``intermediates`` interpolations, frame 0's modes."""
    path = reference_path(ref.coords, [traj.coords[-1]], intermediates)
    settings = AlignmentSettings(working_size=args.box, max_shift=args.max_shift + 2, ctf_mode="full",
                                 coarse_groups=residue_groups(ref))
    aligner = MultiReferenceAligner(path, ref.weights, modes, 1.0, device, args.box, args.apix, settings)
    return _run(aligner, images, params, args, device, lambda idx: (None, None), len(path))


def _run(aligner, images, params, args, device, poses, n_templates):
    n = len(images)
    out = {"euler": [], "origin_A": [], "amplitudes": [], "cost": [], "fit_quality": [], "fit_quality_error": []}
    warm = np.arange(min(args.batch, n))
    aligner.align(images[warm], params["ctf"].subset(warm), *poses(warm))  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.time()
    for start in range(0, n, args.batch):
        idx = np.arange(start, min(n, start + args.batch))
        res = aligner.align(images[idx], params["ctf"].subset(idx), *poses(idx))
        for key in out:
            out[key].append(res[key])
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.time() - t
    out = {k: np.concatenate(v) for k, v in out.items()}
    out["particles_per_second"] = n / seconds
    out["n_templates"] = n_templates
    return out


def align(images, params, ref, modes, args, device, grid=None, from_truth=False, working_size=None, sigma=1.0,
          centre=None, mask_radius=None):
    """``from_truth``: local refinement only, from the true poses (separates the global search's failures
    from the refinement's).  ``centre``: the point of ``ref`` put at the box centre (default its own centre)."""
    reference = ElasticReference(ref.coords - (ref.center() if centre is None else centre), ref.weights, modes,
                                 sigma, device)
    settings = AlignmentSettings(working_size=working_size or args.box, max_shift=args.max_shift + 2, ctf_mode="full",
                                 coarse_groups=residue_groups(ref), local_only=from_truth, mask_radius=mask_radius)
    if grid is not None:
        ElasticAligner._amplitude_grid = grid
    aligner = ElasticAligner(reference, args.box, args.apix, settings)

    def poses(idx):
        return (params["euler"][idx], params["origin_A"][idx]) if from_truth else (None, None)

    return _run(aligner, images, params, args, device, poses, 0 if from_truth else len(aligner._amplitude_grid()))


def score(out, params, ideal, frames_per_particle, n_frames):
    angle = g.angular_distance(g.euler_to_matrix(out["euler"]), g.euler_to_matrix(params["euler"]))
    amp_err = np.abs(out["amplitudes"] - ideal[frames_per_particle]).mean(1)
    fifth = np.minimum(frames_per_particle * 5 // n_frames, 4)
    parts = []
    for f in range(5):
        sel = fifth == f
        parts.append({"fifth": f + 1, "angle_mean": float(angle[sel].mean()), "angle_median": float(np.median(angle[sel])),
                      "beyond_10deg_pct": float(100 * (angle[sel] > 10).mean()),
                      "amplitude_error": float(amp_err[sel].mean()), "cost": float(out["cost"][sel].mean()),
                      "fit_quality": float(np.nanmean(out["fit_quality"][sel])),
                      "poor_fit_pct": float(100 * poor_fit(out["fit_quality"][sel], out["fit_quality_error"][sel]).mean()),
                      "fit_quality_error": float(np.nanmedian(out["fit_quality_error"][sel])),
                      "ideal_amplitude_norm": float(np.linalg.norm(ideal[frames_per_particle[sel]], axis=1).mean())})
    return {"rho_pc1_frame": latent_correlations(out["amplitudes"], frames_per_particle)["abs_rho_pc1_frame"],
            "rho_pc1_frame_ideal": latent_correlations(ideal[frames_per_particle],
                                                       frames_per_particle)["abs_rho_pc1_frame"],
            "angle_mean": float(angle.mean()), "beyond_10deg_pct": float(100 * (angle > 10).mean()),
            "particles_per_second": out["particles_per_second"], "n_templates": out["n_templates"], "fifths": parts}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--per-frame", type=int, default=50)
    p.add_argument("--frame-step", type=int, default=1)
    p.add_argument("--box", type=int, default=128)
    p.add_argument("--apix", type=float, default=1.0)
    p.add_argument("--max-shift", type=float, default=3.0)
    p.add_argument("--snr", type=float, nargs="+", default=[0.1, 0.01])
    p.add_argument("--mode-sets", nargs="+", default=["7-9", "7-12", "7-16"])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--old-grid", action="store_true")
    p.add_argument("--mask-radius", type=float, default=None, help="A, mask of the single-reference runs")
    p.add_argument("--path-intermediates", type=int, nargs="*", default=[],
                   help="also run the engine's multi-reference alignment with the last frame as other reference "
                        "and this many intermediates")
    p.add_argument("--oracle-in-span", action="store_true", help="oracle references projected on frame 0's modes")
    p.add_argument("--oracle-morph", action="store_true",
                   help="oracle references: the end frames and linear interpolations between them")
    p.add_argument("--oracle-transported-modes", action="store_true", help="oracle references use frame 0's modes")
    p.add_argument("--oracle-references", type=int, nargs="*", default=[],
                   help="also align against this many true frames along the transition (multi-reference ceiling)")
    p.add_argument("--from-truth", action="store_true", help="also refine locally from the true poses")
    p.add_argument("--working-sizes", type=int, nargs="+", default=[0], help="refinement sizes to try (0: box)")
    p.add_argument("--sigmas", type=float, nargs="+", default=[1.0], help="atom widths (A) to try")
    p.add_argument("--out", default=os.path.join(HERE, "results", "hemnma_real.json"))
    args = p.parse_args()
    device = torch.device(args.device)
    traj = load_trajectory(os.path.join(DATA, "adk_dims_heavy.npz"), os.path.join(DATA, "frame000_heavy.npz"))
    ref = traj.reference
    traj.coords = traj.coords[::args.frame_step]
    all_modes = compute_modes(ref.coords, 16, "RTB", 8.0, blocks=rtb_blocks(ref.chains, ref.resids, 10)).vectors
    displacement = traj.coords - ref.coords[None]
    results = {"command": " ".join(sys.argv), "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
               "frames": len(traj.coords), "per_frame": args.per_frame, "box": args.box, "apix": args.apix, "runs": []}
    default_grid = ElasticAligner._amplitude_grid
    for snr in args.snr:
        t = time.time()
        images, params = simulate(traj, ref, args, snr, device)
        print("SNR %g: %d particles simulated in %.1f s" % (snr, len(images), time.time() - t), flush=True)
        frames = params["labels"]
        for spec in args.mode_sets:
            first, last = (int(v) for v in spec.split("-"))
            modes = all_modes[first - 1:last]
            ideal = np.einsum("kad,mad->km", displacement, modes)
            span = float((np.linalg.norm(ideal, axis=1) ** 2 / (displacement ** 2).sum((1, 2)).clip(1e-9))[-1])
            variants = [("new", default_grid, False)] + \
                ([("old", old_grid, False)] if args.old_grid and spec == "7-12" else []) + \
                ([("local from true poses", default_grid, True)] if args.from_truth else [])
            variants = [(n, gr, ft, w, sg) for n, gr, ft in variants for w in args.working_sizes for sg in args.sigmas]
            kind = ("in-span " if args.oracle_in_span else "") + ("morph " if args.oracle_morph else "") + \
                ("transported-mode " if args.oracle_transported_modes else "")
            variants += [("oracle %d %sreferences" % (k, kind), k, None, 0, 1.0) for k in args.oracle_references]
            variants += [("other reference: last frame, %d intermediates" % k, k, None, 0, 1.0)
                         for k in args.path_intermediates]
            for base, grid, from_truth, working, sigma in variants:
                name = "%s, %d px, sigma %g" % (base, working or args.box, sigma)
                if base.startswith("other reference"):
                    out = align_path(images, params, ref, traj, modes, grid, args, device)
                    grid, from_truth = default_grid, False
                elif base.startswith("oracle"):
                    out = align_oracle(images, params, ref, traj, all_modes, first, last, grid, args, device,
                                       args.oracle_in_span, args.oracle_morph, args.oracle_transported_modes)
                    grid, from_truth = default_grid, False
                else:
                    out = align(images, params, ref, modes, args, device, grid, from_truth, working, sigma,
                                mask_radius=args.mask_radius)
                s = score(out, params, ideal, frames, len(traj.coords))
                s.update({"snr": snr, "modes": spec, "grid": name, "span_last_frame": span,
                          "working_size": working or args.box, "sigma": sigma, "from_truth": from_truth})
                results["runs"].append(s)
                print("SNR %g modes %s (%s; %d templates): rho %.3f (ideal %.3f), angle %.2f deg, >10 deg %.1f%%, "
                      "%.0f particles/s" % (snr, spec, name, s["n_templates"], s["rho_pc1_frame"],
                                            s["rho_pc1_frame_ideal"], s["angle_mean"], s["beyond_10deg_pct"],
                                            s["particles_per_second"]), flush=True)
                for f in s["fifths"]:
                    print("    fifth %d: angle mean %.2f median %.2f, >10 deg %.1f%%, amplitude error %.1f (ideal |q| %.0f), "
                          "cost %.4f, fit quality %.3f +/- %.3f (%.0f%% poor)"
                          % (f["fifth"], f["angle_mean"], f["angle_median"], f["beyond_10deg_pct"], f["amplitude_error"],
                             f["ideal_amplitude_norm"], f["cost"], f["fit_quality"], f["fit_quality_error"],
                             f["poor_fit_pct"]), flush=True)
        del images
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(results, fh, indent=1)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
