"""Normal mode analysis of an atomic or pseudoatomic model (elastic network, ANM or RTB).

Writes <out>/modes.npy (modes x atoms x 3, unit norm over all 3N coordinates;
modes 1-6 rigid, mode 7 the first non-rigid), modes.csv (eigenvalue,
collectivity, ContinuousFlex score, enabled), fluctuations.csv (per atom),
modes.nmd (VMD NMWiz), animations/mode_N.pdb (multi-model, +/- amplitude) and
summary.json.
"""
import os

import numpy as np

from ..cli import add_common_args, fail, select_device
from ..core.atoms import read_atoms
from ..core.runtime import EngineInputError, Progress, log, write_summary
from ..nma import outputs
from ..nma.pipeline import NmaSettings, run_nma, write_nma


def add_args(p):
    p.add_argument("--atoms", required=True, help="model: engine .npz, or .pdb/.cif (read with ProDy)")
    p.add_argument("--selection", default="all", help="ProDy selection for .pdb/.cif input (default: %(default)s)")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--model", default="ANM", choices=["ANM", "RTB", "anm", "rtb"])
    p.add_argument("--block-size", type=int, default=10,
                   help="RTB: consecutive residues of a chain per block, or neighbouring pseudoatoms (default: 10)")
    p.add_argument("--cutoff", type=float, default=15.0, help="spring cutoff in A (default: %(default)s)")
    p.add_argument("--cutoff-percentile", type=float, default=None,
                   help="relative cutoff: this percentile of the distances to the 3 nearest neighbours "
                        "(overrides --cutoff)")
    p.add_argument("--gamma", type=float, default=1.0, help="spring constant (default: %(default)s)")
    p.add_argument("-n", "--n-modes", type=int, default=20, help="modes including the 6 rigid ones (default: 20)")
    p.add_argument("--collectivity-threshold", type=float, default=0.15,
                   help="modes less collective than this are disabled (default: %(default)s)")
    p.add_argument("--animation-rmsd", type=float, default=2.0,
                   help="RMS displacement (A) at the ends of the mode animations (default: %(default)s)")
    p.add_argument("--animation-frames", type=int, default=10)
    add_common_args(p)  # NMA itself runs on the CPU; --threads sets its torch/BLAS threads


def main(args):
    select_device("cpu", args.threads)
    try:
        model = read_atoms(args.atoms, args.selection)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        fail(str(exc))
    settings = NmaSettings(model=args.model.upper(), n_modes=args.n_modes, cutoff=args.cutoff,
                           cutoff_percentile=args.cutoff_percentile, gamma=args.gamma, block_size=args.block_size,
                           collectivity_threshold=args.collectivity_threshold)
    progress = Progress(1, "nma", unit="analyses")
    try:
        result = run_nma(model, settings)
    except EngineInputError as exc:
        fail(str(exc))
    progress.update(1)
    amplitude = write_nma(args.out, model, result, args.animation_rmsd, args.animation_frames)
    modes = result.modes
    summary = {
        "command": "nma", "model": settings.model, "n_atoms": len(model), "n_modes": len(modes),
        "cutoff_A": result.cutoff, "cutoff_percentile": args.cutoff_percentile, "gamma": args.gamma,
        "block_size": args.block_size if settings.model == "RTB" else None, "n_blocks": result.n_blocks,
        "eigenvalues": modes.eigenvalues, "collectivity": result.collectivity, "score": result.scores,
        "enabled": result.enabled, "n_enabled": int(result.enabled.sum()),
        "bfactor_correlation": result.bfactor_correlation, "fluctuation_modes": result.fluctuation_modes,
        "animation_amplitude": amplitude, "seconds": progress.elapsed(), "files": outputs.NMA_FILES,
    }
    write_summary(os.path.join(args.out, outputs.SUMMARY), summary)
    log("done in %.1f s: eigenvalues of modes 7-9 %s; %d modes enabled%s" % (
        progress.elapsed(), np.array2string(modes.eigenvalues[6:9], precision=4), result.enabled.sum(),
        "" if result.bfactor_correlation is None else "; B-factor correlation %.3f" % result.bfactor_correlation))
    return 0
