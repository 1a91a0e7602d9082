"""Represent a map by pseudoatoms: N Gaussians of a given width fitted to the density above a threshold.

Writes <out>/pseudoatoms.pdb (in the map's frame: it overlays the map and its
atomic model; B-factor column = relative weight), pseudoatoms.npz (exact
weights, for the engine), pseudoatoms_map.mrc (the map of the Gaussians) and
summary.json with the correlation between that map and the input.
"""
import os

import numpy as np

from ..cli import fail, select_device
from ..core.runtime import Progress, log, write_summary
from ..core.atoms import AtomModel
from ..core.io.mrc import MRCError, read_map, write_map
from ..nma.formats import pdb_lines
from ..nma.pseudoatoms import default_count, fit_pseudoatoms


def add_args(p):
    p.add_argument("--map", required=True, help="cubic .mrc map")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--threshold", type=float, default=None,
                   help="density threshold (default: map mean + 1 standard deviation)")
    p.add_argument("--n-atoms", type=int, default=None,
                   help="number of pseudoatoms (default: one per (2 sigma)^3 of thresholded volume)")
    p.add_argument("--sigma", type=float, default=None, help="Gaussian width in A (default: 0.75 voxel)")
    p.add_argument("--resolution", type=float, default=None,
                   help="map resolution in A for the reported correlation (default: Nyquist)")
    p.add_argument("--refine-steps", type=int, default=150, help="joint refinement iterations (default: 150)")
    p.add_argument("--apix", type=float, default=None, help="override the map's voxel size")
    p.add_argument("--origin", default=None, help="x,y,z origin in A (override the map header)")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seed", type=int, default=0)


def main(args):
    try:
        volume, info = read_map(args.map, require_cubic=True)
    except MRCError as exc:
        fail(str(exc))
    apix = args.apix or info.apix
    if not apix or apix <= 0:
        fail("%s has no voxel size in its header; give --apix" % args.map)
    origin = tuple(float(v) for v in args.origin.split(",")) if args.origin else info.origin
    threshold = args.threshold if args.threshold is not None else float(volume.mean() + volume.std())
    n_above = int((volume > threshold).sum())
    if n_above == 0:
        fail("no voxel of %s is above the threshold %g (map values %g to %g)"
             % (args.map, threshold, volume.min(), volume.max()))
    device = select_device(args.device)
    sigma = args.sigma or 0.75 * apix
    n_atoms = args.n_atoms or default_count(n_above, apix, sigma)
    log("fitting %d pseudoatoms (sigma %.2f A) to %d voxels above %.4g" % (n_atoms, sigma, n_above, threshold))
    progress = Progress(1, "pseudoatoms", unit="maps")
    try:
        fit = fit_pseudoatoms(volume, apix, origin, threshold, n_atoms, sigma, args.resolution, args.refine_steps,
                              args.seed, device)
    except ValueError as exc:
        fail(str(exc))
    progress.update(1)
    n = len(fit.coords)
    rel = 100.0 * fit.weights / fit.weights.max()
    model = AtomModel(fit.coords, np.full(n, "C"), np.full(n, "CA"), np.full(n, "PSA"), np.arange(1, n + 1),
                      np.full(n, "A"), rel, weights=fit.weights)
    os.makedirs(args.out, exist_ok=True)
    model.save(os.path.join(args.out, "pseudoatoms.npz"))
    with open(os.path.join(args.out, "pseudoatoms.pdb"), "w") as fh:
        fh.write("REMARK CryoFlex pseudoatoms: Gaussian sigma %.4f A, %d atoms, fitted to %s\n"
                 % (fit.sigma, n, os.path.basename(args.map)))
        fh.write("\n".join(pdb_lines(model, model.coords)) + "\nEND\n")
    write_map(os.path.join(args.out, "pseudoatoms_map.mrc"), fit.model_map, apix, origin)
    summary = {"command": "pseudoatoms", "n_atoms": n, "n_requested": n_atoms, "sigma_A": fit.sigma,
               "threshold": threshold, "voxels_above_threshold": n_above, "apix": apix, "origin_A": origin,
               "resolution_A": fit.resolution, "correlation": fit.correlation, "correlation_box": fit.correlation_box,
               "seconds": progress.elapsed(),
               "files": {"pdb": "pseudoatoms.pdb", "npz": "pseudoatoms.npz", "map": "pseudoatoms_map.mrc"}}
    write_summary(os.path.join(args.out, "summary.json"), summary)
    log("done in %.1f s: %d pseudoatoms, correlation with the map %.4f at %.1f A (inside the mask; %.4f over the box)"
        % (progress.elapsed(), n, fit.correlation, fit.resolution, fit.correlation_box))
    return 0
