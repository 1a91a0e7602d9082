"""Conformational landscape: dimension reduction, groups, per-group reconstructions, animations.

Reads per-particle flexibility coordinates (--features, N x M: normal-mode amplitudes or latent
vectors), reduces them (PCA by default), groups the particles, and optionally
- reconstructs every group from the particles' poses and CTF (--particles, same order as the
  features), writing group_K/map.mrc, half1.mrc, half2.mrc and fsc.csv;
- for normal-mode amplitudes (--atoms and --modes), writes each group's centroid structure
  (reference deformed by the group's mean amplitudes) and multi-model PDB animations along the
  principal axes from -2 to +2 standard deviations.
Outputs landscape.npz (reduced coordinates, groups, projector), groups.csv and summary.json.
"""
import os

import numpy as np

from ..cli import add_common_args, fail, select_device
from ..core.runtime import Progress, device_name, log, write_summary
from ..core.atoms import AtomModel, deform, read_atoms
from ..core.io.mrc import MRCError, write_map
from ..core.io.particles import read_particles
from ..core.io.star import StarError
from ..core.metrics import fsc_frequencies, resolution_at
from ..core.reconstruct_stream import reconstruct_table
from ..landscape.groups import (gmm_groups, keep_core, kmeans_groups, parse_ranges, quantile_groups,
                                range_groups)
from ..landscape.reduce import fit_pca, fit_umap
from ..nma.formats import pdb_lines, write_animation


def add_args(p):
    p.add_argument("--features", required=True, help=".npy (N x M) of per-particle amplitudes or latents")
    p.add_argument("-o", "--out", required=True)
    p.add_argument("--method", default="pca", choices=["pca", "umap"])
    p.add_argument("--dims", type=int, default=2, help="dimensions of the landscape (default: 2)")
    p.add_argument("--standardise", action="store_true", help="scale every feature to unit variance before PCA")
    p.add_argument("--grouping", default="kmeans", choices=["kmeans", "gmm", "ranges", "quantiles", "none"])
    p.add_argument("--k", type=int, default=10, help="groups for kmeans/gmm; maximum groups for quantiles")
    p.add_argument("--ranges", nargs="*", default=[],
                   help="one group per argument: axis:min:max conditions joined by commas, e.g. 1:-900:-100")
    p.add_argument("--min-size", type=int, default=100, help="quantiles: particles per group at least")
    p.add_argument("--core-fraction", type=float, default=1.0,
                   help="keep the fraction of each group closest to its centre (dense core; default 1 = all)")
    rec = p.add_argument_group("group reconstructions (optional)")
    rec.add_argument("--particles", default=None, help="STAR/.cs of the same particles, in the same order, with poses")
    rec.add_argument("--data-root", default=None)
    rec.add_argument("--ctf-mode", default="full", choices=["full", "phase-flipped", "none"])
    rec.add_argument("--size", type=int, default=None, help="reconstruction box (Fourier-cropped); default full")
    rec.add_argument("--pad", type=float, default=2.0)
    nm = p.add_argument_group("normal-mode structures (optional)")
    nm.add_argument("--atoms", default=None, help="reference model (.npz/.pdb) of the modes")
    nm.add_argument("--modes", default=None, help=".npy (M x atoms x 3) of the modes matching the features' columns")
    nm.add_argument("--animation-frames", type=int, default=10)
    add_common_args(p, batch_size=256)


def _groups(args, reduced):
    if args.grouping == "none":
        return np.full(len(reduced), -1, dtype=np.int64)
    if args.grouping == "kmeans":
        labels = kmeans_groups(reduced, args.k, args.seed)
    elif args.grouping == "gmm":
        labels = gmm_groups(reduced, args.k, args.seed)
    elif args.grouping == "ranges":
        if not args.ranges:
            fail("--grouping ranges needs --ranges (e.g. 1:-900:-100)")
        try:
            labels = range_groups(reduced, [parse_ranges(r) for r in args.ranges])
        except ValueError as exc:
            fail(str(exc))
    else:
        try:
            labels = quantile_groups(reduced, args.min_size, args.k)
        except ValueError as exc:
            fail(str(exc))
    return keep_core(reduced, labels, args.core_fraction)


def main(args):
    if not os.path.exists(args.features):
        fail("features file not found: %s" % args.features)
    features = np.load(args.features)
    if features.ndim != 2 or len(features) < 2:
        fail("%s: expected an array (particles, coordinates), got %s" % (args.features, features.shape))
    if not np.all(np.isfinite(features)):
        fail("%s: features contain NaN or infinite values" % args.features)
    if args.grouping in ("kmeans", "gmm") and args.k > len(features):
        fail("%d groups asked for but there are %d particles" % (args.k, len(features)))
    table = None
    if args.particles:
        try:
            table = read_particles(args.particles, check_files=True, data_root=args.data_root)
            table.uniform()
        except (StarError, FileNotFoundError, MRCError) as exc:
            fail(str(exc))
        if len(table) != len(features):
            fail("%s has %d particles but the features have %d rows" % (args.particles, len(table), len(features)))
        if not table.has_pose:
            fail("%s has no poses: group reconstructions need them" % args.particles)
    model = modes = None
    if args.atoms or args.modes:
        if not (args.atoms and args.modes):
            fail("--atoms and --modes go together")
        model = read_atoms(args.atoms)
        modes = np.load(args.modes)
        if modes.shape[1] != len(model) or modes.shape[0] != features.shape[1]:
            fail("modes %s do not match the reference (%d atoms) and the features (%d columns)"
                 % (modes.shape, len(model), features.shape[1]))

    progress = Progress(1, "landscape", unit="steps")
    os.makedirs(args.out, exist_ok=True)
    if args.method == "pca":
        projector = fit_pca(features, args.dims, args.standardise)
        reduced = projector.transform(features)
    else:
        try:
            reduced, projector = fit_umap(features, args.dims, args.seed)
        except ImportError as exc:
            fail(str(exc))
    labels = _groups(args, reduced)
    groups = [int(g) for g in np.unique(labels[labels >= 0])]
    log("%s of %d particles to %d dimensions; %d groups (%s), %d particles in none"
        % (args.method.upper(), len(features), reduced.shape[1], len(groups), args.grouping, (labels < 0).sum()))

    rows = []
    device = select_device(args.device, args.threads) if table is not None else None
    for g in groups:
        members = np.nonzero(labels == g)[0]
        row = {"group": g + 1, "size": len(members), "centre": reduced[members].mean(0),
               "mean_features": features[members].mean(0)}
        folder = os.path.join(args.out, "group_%d" % (g + 1))
        os.makedirs(folder, exist_ok=True)
        if model is not None:
            coords = deform(model.coords, modes, row["mean_features"][None])[0]
            with open(os.path.join(folder, "centroid.pdb"), "w") as fh:
                fh.write("\n".join(pdb_lines(model, coords)) + "\nEND\n")
        if table is not None and len(members) >= 2:
            result = reconstruct_table(table, members, args.size, args.ctf_mode, args.pad, device=device,
                                       batch_size=args.batch_size, data_root=args.data_root)
            size, apix = result["size"], result["apix"]
            origin = (-(size // 2) * apix,) * 3
            write_map(os.path.join(folder, "map.mrc"), result["full_map"].cpu().numpy(), apix, origin)
            for i, half in enumerate(result["half_maps"]):
                write_map(os.path.join(folder, "half%d.mrc" % (i + 1)), half.cpu().numpy(), apix, origin)
            np.savetxt(os.path.join(folder, "fsc.csv"), np.stack([fsc_frequencies(size, apix), result["fsc"]], -1),
                       delimiter=",", header="frequency_1_per_A,fsc_half_maps", comments="", fmt="%.6g")
            row["resolution_0.143_A"] = resolution_at(result["fsc"], size, apix, 0.143)
            row["resolution_0.5_A"] = resolution_at(result["fsc"], size, apix, 0.5)
            log("group %d: %d particles, half-map FSC %.2f A (0.143)" % (g + 1, len(members),
                                                                        row["resolution_0.143_A"]))
        rows.append(row)

    if model is not None and projector is not None:
        os.makedirs(os.path.join(args.out, "animations"), exist_ok=True)
        for axis in range(reduced.shape[1]):
            sd = float(np.sqrt(projector.explained[axis]))
            direction = projector.components[axis] * projector.scale  # feature change per unit along the axis
            # Frames from -2 sd to +2 sd along the axis, around the mean conformation.
            base = deform(model.coords, modes, projector.mean[None])[0]
            centre = AtomModel(base, model.elements, model.names, model.resnames, model.resids, model.chains,
                               model.bfactors, model.weights)
            vector = np.einsum("m,mai->ai", direction, modes)
            write_animation(os.path.join(args.out, "animations", "axis_%d.pdb" % (axis + 1)), centre, vector,
                            2 * sd, args.animation_frames)

    save = {"reduced": reduced, "groups": labels}
    if projector is not None:
        projector.save(os.path.join(args.out, "projector.npz"))
        save.update(components=projector.components, mean=projector.mean, explained=projector.explained)
    np.savez(os.path.join(args.out, "landscape.npz"), **save)
    header = ["group", "size"] + ["centre_%d" % (i + 1) for i in range(reduced.shape[1])] + \
        ["mean_%d" % (i + 1) for i in range(features.shape[1])] + ["resolution_0.143_A", "resolution_0.5_A"]
    table_rows = [[r["group"], r["size"]] + list(r["centre"]) + list(r["mean_features"]) +
                  [r.get("resolution_0.143_A", np.nan), r.get("resolution_0.5_A", np.nan)] for r in rows]
    np.savetxt(os.path.join(args.out, "groups.csv"), np.array(table_rows, dtype=float).reshape(-1, len(header)),
               delimiter=",", header=",".join(header), comments="", fmt="%.6g")
    progress.update(1)
    summary = {"command": "landscape", "n_particles": len(features), "method": args.method,
               "dims": int(reduced.shape[1]), "grouping": args.grouping, "n_groups": len(groups),
               "group_sizes": [r["size"] for r in rows], "ungrouped": int((labels < 0).sum()),
               "explained_variance": None if projector is None else projector.explained,
               "resolutions_0.143_A": [r.get("resolution_0.143_A") for r in rows],
               "resolutions_0.5_A": [r.get("resolution_0.5_A") for r in rows],
               "device": None if device is None else device_name(device), "seconds": progress.elapsed(),
               "files": {"landscape": "landscape.npz", "groups": "groups.csv", "projector": "projector.npz"}}
    write_summary(os.path.join(args.out, "summary.json"), summary)
    log("done in %.1f s" % progress.elapsed())
    return 0
