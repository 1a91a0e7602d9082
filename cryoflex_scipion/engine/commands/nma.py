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
from ..core.runtime import Progress, log, write_summary
from ..core.atoms import read_atoms
from ..nma.analysis import collectivity, mode_scores, pearson, square_fluctuations
from ..nma.elastic import DENSE_LIMIT, NetworkError, compute_modes, relative_cutoff, rtb_blocks, spatial_blocks
from ..nma.formats import pdb_lines, write_animation, write_nmd


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


def _labels(model):
    return ["%s:%s%d:%s" % (c or "-", r, i, n) for c, r, i, n in
            zip(model.chains, model.resnames, model.resids, model.names)]


def main(args):
    select_device("cpu", args.threads)
    try:
        model = read_atoms(args.atoms, args.selection)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        fail(str(exc))
    n_atoms = len(model)
    kind = args.model.upper()
    if args.n_modes < 7:
        fail("--n-modes counts the 6 rigid-body modes: ask for at least 7")
    cutoff = relative_cutoff(model.coords, args.cutoff_percentile) if args.cutoff_percentile else args.cutoff
    blocks = None
    if kind == "RTB":
        # Pseudoatoms have no chain order: their blocks are groups of neighbours in space.
        pseudo = bool(np.all(model.resnames == "PSA"))
        blocks = spatial_blocks(model.coords, args.block_size) if pseudo else \
            rtb_blocks(model.chains, model.resids, args.block_size)
    progress = Progress(1, "nma", unit="analyses")
    log("%s normal modes of %d atoms, cutoff %.2f A%s, %d modes"
        % (kind, n_atoms, cutoff, " (%d blocks)" % (blocks.max() + 1) if blocks is not None else "", args.n_modes))
    try:
        modes = compute_modes(model.coords, args.n_modes, kind, cutoff, args.gamma, blocks, _labels(model))
    except NetworkError as exc:
        fail(str(exc))
    progress.update(1)
    coll = collectivity(modes.vectors)
    scores = mode_scores(coll)
    enabled = (np.arange(len(modes)) >= 6) & (coll >= args.collectivity_threshold)
    n_zero = int((modes.eigenvalues < 1e-6 * modes.eigenvalues[-1]).sum())
    if n_zero > 6:
        fail("%d zero-frequency modes instead of 6: the network has floppy parts; increase the cutoff" % n_zero)

    # Fluctuations from the full spectrum when it is small, else from the computed modes.
    full = modes
    if kind == "ANM" and 3 * n_atoms <= DENSE_LIMIT and args.n_modes < 3 * n_atoms:
        full = compute_modes(model.coords, 3 * n_atoms, kind, cutoff, args.gamma, blocks)
    flucts = square_fluctuations(full.vectors, full.eigenvalues)
    has_b = np.ptp(model.bfactors) > 0 and not np.all(model.resnames == "PSA")  # pseudoatoms: weights there
    b_corr = pearson(flucts, model.bfactors) if has_b else None

    os.makedirs(os.path.join(args.out, "animations"), exist_ok=True)
    np.save(os.path.join(args.out, "modes.npy"), modes.vectors)
    table = np.stack([np.arange(1, len(modes) + 1), modes.eigenvalues, coll, scores, enabled.astype(float)], -1)
    np.savetxt(os.path.join(args.out, "modes.csv"), table, delimiter=",", comments="",
               header="mode,eigenvalue,collectivity,score,enabled", fmt=["%d", "%.10g", "%.6f", "%.6f", "%d"])
    np.savetxt(os.path.join(args.out, "fluctuations.csv"), np.stack([np.arange(1, n_atoms + 1), model.resids,
                                                                        flucts, model.bfactors], -1),
               delimiter=",", comments="", header="atom,residue,msf_A2,bfactor", fmt=["%d", "%d", "%.6g", "%.3f"])
    write_nmd(os.path.join(args.out, "modes.nmd"), model, modes.vectors, modes.eigenvalues)
    with open(os.path.join(args.out, "atoms.pdb"), "w") as fh:  # the atoms the modes refer to
        fh.write("\n".join(pdb_lines(model, model.coords)) + "\nEND\n")
    amplitude = args.animation_rmsd * np.sqrt(n_atoms)  # unit-norm mode: RMS displacement = amplitude / sqrt(A)
    for k in range(6, len(modes)):
        write_animation(os.path.join(args.out, "animations", "mode_%d.pdb" % (k + 1)), model, modes.vectors[k],
                        amplitude, args.animation_frames)
    summary = {
        "command": "nma", "model": kind, "n_atoms": n_atoms, "n_modes": len(modes), "cutoff_A": cutoff,
        "cutoff_percentile": args.cutoff_percentile, "gamma": args.gamma,
        "block_size": args.block_size if kind == "RTB" else None, "n_blocks": modes.n_blocks or None,
        "eigenvalues": modes.eigenvalues, "collectivity": coll, "score": scores, "enabled": enabled,
        "n_enabled": int(enabled.sum()), "bfactor_correlation": b_corr,
        "fluctuation_modes": "all" if full is not modes else "computed",
        "animation_amplitude": amplitude, "seconds": progress.elapsed(),
        "files": {"modes": "modes.npy", "table": "modes.csv", "fluctuations": "fluctuations.csv",
                  "nmd": "modes.nmd", "atoms": "atoms.pdb", "animations": "animations/mode_N.pdb"},
    }
    write_summary(os.path.join(args.out, "summary.json"), summary)
    log("done in %.1f s: eigenvalues of modes 7-9 %s; %d modes enabled%s" % (
        progress.elapsed(), np.array2string(modes.eigenvalues[6:9], precision=4), enabled.sum(),
        "" if b_corr is None else "; B-factor correlation %.3f" % b_corr))
    return 0
