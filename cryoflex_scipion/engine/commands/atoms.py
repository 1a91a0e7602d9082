"""Convert an atomic model (PDB/mmCIF, read with ProDy) to the engine's .npz arrays.

The .npz holds coordinates, elements, atom and residue names, residue ids,
chain ids, B-factors and weights (electrons), so GPU nodes without ProDy can
run every engine command on it.
"""
from ..cli import fail
from ..core.runtime import log
from ..core.atoms import read_atoms


def add_args(p):
    p.add_argument("model", help=".pdb or .cif file")
    p.add_argument("-o", "--out", required=True, help="output .npz")
    p.set_defaults(output_kind="file")
    p.add_argument("--selection", default="all", help="ProDy selection (default: %(default)s)")


def main(args):
    try:
        model = read_atoms(args.model, args.selection)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        fail(str(exc))
    model.save(args.out)
    log("wrote %d atoms to %s" % (len(model), args.out))
    return 0
