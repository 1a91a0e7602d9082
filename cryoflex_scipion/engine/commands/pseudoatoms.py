"""Represent a map by pseudoatoms: N Gaussians of a given width fitted to the density above a threshold.

Writes <out>/pseudoatoms.pdb (in the map's frame: it overlays the map and its
atomic model; B-factor column = relative weight), pseudoatoms.npz (exact
weights, for the engine), pseudoatoms_map.mrc (the map of the Gaussians) and
summary.json with the correlation between that map and the input.
"""
import os

from ..cli import fail, select_device
from ..core.io.mrc import read_map
from ..core.numbers import parse_origin
from ..core.runtime import EngineInputError, Progress, log, write_summary
from ..core.validate import check_map
from ..nma import outputs
from ..nma.pipeline import run_pseudoatoms, write_pseudoatoms


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
    volume, info = read_map(args.map, require_cubic=True)
    apix = args.apix or info.apix
    check_map(volume, apix, args.map)
    try:
        origin = parse_origin(args.origin) or info.origin
    except ValueError as exc:
        fail(str(exc))
    device = select_device(args.device)
    progress = Progress(1, "pseudoatoms", unit="maps")
    try:
        fit, model, threshold, n_above, n_requested = run_pseudoatoms(
            volume, apix, origin, args.threshold, args.n_atoms, args.sigma, args.resolution, args.refine_steps,
            args.seed, device)
    except EngineInputError as exc:
        fail("%s: %s" % (args.map, exc))
    progress.update(1)
    write_pseudoatoms(args.out, fit, model, apix, origin, os.path.basename(args.map))
    summary = {"command": "pseudoatoms", "n_atoms": len(model), "n_requested": n_requested, "sigma_A": fit.sigma,
               "threshold": threshold, "voxels_above_threshold": n_above, "apix": apix, "origin_A": origin,
               "resolution_A": fit.resolution, "correlation": fit.correlation, "correlation_box": fit.correlation_box,
               "seconds": progress.elapsed(), "files": outputs.PSEUDO_FILES}
    write_summary(os.path.join(args.out, outputs.SUMMARY), summary)
    log("done in %.1f s: %d pseudoatoms, correlation with the map %.4f at %.1f A (inside the mask; %.4f over the box)"
        % (progress.elapsed(), len(model), fit.correlation, fit.resolution, fit.correlation_box))
    return 0
