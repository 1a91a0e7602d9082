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
from ..core.atoms import read_atoms
from ..core.io.mrc import MRCError
from ..core.io.particles import read_particles
from ..core.io.star import StarError
from ..core.runtime import EngineInputError, log, write_summary
from ..core.validate import load_array
from ..landscape import outputs
from ..landscape.pipeline import GROUPINGS, LandscapeSettings, run_landscape


def add_args(p):
    p.add_argument("--features", required=True, help=".npy (N x M) of per-particle amplitudes or latents")
    p.add_argument("-o", "--out", required=True)
    p.add_argument("--method", default="pca", choices=["pca", "umap"])
    p.add_argument("--dims", type=int, default=2, help="dimensions of the landscape (default: 2)")
    p.add_argument("--standardise", action="store_true", help="scale every feature to unit variance before PCA")
    p.add_argument("--grouping", default="kmeans", choices=list(GROUPINGS))
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


def _inputs(args):
    features = load_array(args.features, "features")
    table = model = modes = None
    try:
        if args.particles:
            table = read_particles(args.particles, check_files=True, data_root=args.data_root)
            table.uniform()
        if args.atoms or args.modes:
            if not (args.atoms and args.modes):
                fail("--atoms and --modes go together")
            model = read_atoms(args.atoms)
            modes = load_array(args.modes, "modes")
    except (StarError, FileNotFoundError, MRCError, ValueError, ImportError) as exc:
        fail(str(exc))
    return features, table, model, modes


def main(args):
    features, table, model, modes = _inputs(args)
    settings = LandscapeSettings(method=args.method, dims=args.dims, standardise=args.standardise,
                                 grouping=args.grouping, k=args.k, ranges=list(args.ranges), min_size=args.min_size,
                                 core_fraction=args.core_fraction, seed=args.seed, ctf_mode=args.ctf_mode,
                                 size=args.size, pad=args.pad, batch_size=args.batch_size, data_root=args.data_root,
                                 animation_frames=args.animation_frames)
    device = select_device(args.device, args.threads) if table is not None else None
    try:
        summary = run_landscape(features, settings, args.out, table, model, modes, device)
    except EngineInputError as exc:
        fail("%s: %s" % (args.features, exc))
    write_summary(os.path.join(args.out, outputs.SUMMARY), summary)
    log("done in %.1f s" % summary["seconds"])
    return 0
