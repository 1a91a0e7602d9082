"""Map of an atomic model: Gaussian atoms (electrons as weights), optionally low-passed to a resolution.

The grid is either given (--size, --apix; the model's frame origin at the box
centre unless --origin) or copied from an existing map (--like), so a model
fitted into a map gives a map on exactly that grid.  With --resolution the map
holds no information beyond 1/resolution (hard spherical low-pass), so its FSC
with the model falls to zero there.
"""
import numpy as np

from ..cli import fail
from ..core.runtime import log
from ..core.atoms import read_atoms
from ..core.io.mrc import MRCError, read_map, write_map
from ..core.maps import centred_origin, model_map


def add_args(p):
    p.add_argument("model", help=".pdb/.cif (through ProDy) or engine .npz")
    p.add_argument("-o", "--out", required=True, help="output .mrc")
    p.set_defaults(output_kind="file")
    p.add_argument("--selection", default="not hydrogen", help="atoms to use (default: %(default)s)")
    p.add_argument("--like", default=None, help="take box, voxel size and origin from this map")
    p.add_argument("--size", type=int, default=None, help="box size in voxels (without --like)")
    p.add_argument("--apix", type=float, default=None, help="voxel size in A (without --like)")
    p.add_argument("--origin", type=float, nargs=3, default=None, metavar=("X", "Y", "Z"),
                   help="MRC origin in A (default: model frame origin at the box centre)")
    p.add_argument("--resolution", type=float, default=None, help="low-pass to this resolution (A)")
    p.add_argument("--sigma", type=float, default=1.0, help="Gaussian width of an atom in A (default: 1)")


def main(args):
    if args.like:
        try:
            like, info = read_map(args.like, require_cubic=True)
        except (MRCError, OSError) as exc:
            fail(str(exc))
        size, apix, origin = like.shape[0], info.apix, info.origin
        if not (apix and np.isfinite(apix) and apix > 0):
            fail("--like %s: the voxel size in its header is %s; give --size and --apix instead"
                 % (args.like, "%g A" % apix if apix is not None else "missing"))
    else:
        if not args.size or not args.apix or args.size < 2 or args.apix <= 0:
            fail("give --like MAP, or --size and --apix (positive)")
        size, apix = args.size, args.apix
        origin = tuple(args.origin) if args.origin else centred_origin(size, apix)
    try:
        model = read_atoms(args.model, args.selection)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        fail(str(exc))
    lo = np.asarray(origin)
    inside = np.all((model.coords >= lo) & (model.coords < lo + size * apix), axis=1)
    if not inside.all():
        log("warning: %d of %d atoms lie outside the box" % (int((~inside).sum()), len(model)))
    try:
        vol = model_map(model.coords, model.weights, size, apix, args.resolution, args.sigma, origin)
    except ValueError as exc:
        fail(str(exc))
    write_map(args.out, vol, apix, origin)
    log("wrote %s: %d^3 voxels of %.3f A%s from %d atoms" % (
        args.out, size, apix, ", low-passed to %.2f A" % args.resolution if args.resolution else "", len(model)))
    return 0
