"""Normal mode analysis and pseudoatoms, as the command line, the protocols and the benchmarks run them.

- :func:`run_nma`: elastic-network modes (ANM or RTB) of a model with their collectivity, scores,
  enabled flags and fluctuations; :func:`write_nma` writes them (names in :mod:`.outputs`).
- :func:`run_pseudoatoms`: Gaussians fitted to a map above a threshold; :func:`write_pseudoatoms`.

Unusable input raises :class:`..core.runtime.EngineInputError`.
"""
import os
from dataclasses import dataclass

import numpy as np

from ..core.atoms import AtomModel
from ..core.io.mrc import write_map
from ..core.runtime import EngineInputError, log
from . import outputs
from .analysis import collectivity, mode_scores, pearson, square_fluctuations
from .elastic import DENSE_LIMIT, NetworkError, compute_modes, relative_cutoff, rtb_blocks, spatial_blocks
from .formats import pdb_lines, write_animation, write_nmd
from .pseudoatoms import default_count, fit_pseudoatoms

__all__ = ["NmaSettings", "NmaResult", "run_nma", "write_nma", "run_pseudoatoms", "write_pseudoatoms"]


@dataclass
class NmaSettings:
    model: str = "ANM"                  # ANM | RTB
    n_modes: int = 20                   # including the 6 rigid-body modes
    cutoff: float = 15.0                # A
    cutoff_percentile: float = None     # relative cutoff (overrides cutoff)
    gamma: float = 1.0
    block_size: int = 10                # RTB: residues (or neighbouring pseudoatoms) per block
    collectivity_threshold: float = 0.15


@dataclass
class NmaResult:
    modes: object                       # elastic.Modes (vectors, eigenvalues, n_blocks)
    collectivity: np.ndarray
    scores: np.ndarray
    enabled: np.ndarray
    fluctuations: np.ndarray            # per-atom mean square fluctuation (A^2)
    fluctuation_modes: str              # "all" (full spectrum) or "computed"
    bfactor_correlation: float
    cutoff: float
    n_blocks: int


def _labels(model):
    return ["%s:%s%d:%s" % (c or "-", r, i, n) for c, r, i, n in
            zip(model.chains, model.resnames, model.resids, model.names)]


def run_nma(model, settings):
    """Normal modes of ``model`` (an :class:`..core.atoms.AtomModel`) -> :class:`NmaResult`."""
    kind = settings.model.upper()
    if kind not in ("ANM", "RTB"):
        raise EngineInputError("unknown network model %r (ANM or RTB)" % settings.model)
    if settings.n_modes < 7:
        raise EngineInputError("--n-modes counts the 6 rigid-body modes: ask for at least 7")
    if len(model) < 3:
        raise EngineInputError("normal modes need at least 3 atoms, the model has %d" % len(model))
    cutoff = relative_cutoff(model.coords, settings.cutoff_percentile) if settings.cutoff_percentile \
        else settings.cutoff
    if not cutoff > 0:
        raise EngineInputError("the spring cutoff must be positive, got %g" % cutoff)
    blocks = None
    if kind == "RTB":
        if settings.block_size < 1:
            raise EngineInputError("--block-size must be at least 1")
        # Pseudoatoms have no chain order: their blocks are groups of neighbours in space.
        pseudo = bool(np.all(model.resnames == "PSA"))
        blocks = spatial_blocks(model.coords, settings.block_size) if pseudo else \
            rtb_blocks(model.chains, model.resids, settings.block_size)
    log("%s normal modes of %d atoms, cutoff %.2f A%s, %d modes"
        % (kind, len(model), cutoff, " (%d blocks)" % (blocks.max() + 1) if blocks is not None else "",
           settings.n_modes))
    try:
        modes = compute_modes(model.coords, settings.n_modes, kind, cutoff, settings.gamma, blocks, _labels(model))
    except NetworkError as exc:
        raise EngineInputError(str(exc)) from None
    coll = collectivity(modes.vectors)
    enabled = (np.arange(len(modes)) >= 6) & (coll >= settings.collectivity_threshold)
    n_zero = int((modes.eigenvalues < 1e-6 * modes.eigenvalues[-1]).sum())
    if n_zero > 6:
        raise EngineInputError("%d zero-frequency modes instead of 6: the network has floppy parts; increase the "
                               "cutoff" % n_zero)
    # Fluctuations from the full spectrum when it is small, else from the computed modes.
    full = modes
    if kind == "ANM" and 3 * len(model) <= DENSE_LIMIT and settings.n_modes < 3 * len(model):
        full = compute_modes(model.coords, 3 * len(model), kind, cutoff, settings.gamma, blocks)
    flucts = square_fluctuations(full.vectors, full.eigenvalues)
    has_b = np.ptp(model.bfactors) > 0 and not np.all(model.resnames == "PSA")  # pseudoatoms: weights there
    return NmaResult(modes, coll, mode_scores(coll), enabled, flucts, "all" if full is not modes else "computed",
                     pearson(flucts, model.bfactors) if has_b else None, cutoff, modes.n_blocks or None)


def write_nma(out, model, result, animation_rmsd=2.0, animation_frames=10):
    """Write the modes and their tables, the NMD file, the atoms and the animations into ``out``;
    returns the animation amplitude (unit-norm mode: RMS displacement = amplitude / sqrt(atoms))."""
    modes, n_atoms = result.modes, len(model)
    os.makedirs(os.path.join(out, outputs.ANIMATIONS), exist_ok=True)
    np.save(os.path.join(out, outputs.MODES), modes.vectors)
    table = np.stack([np.arange(1, len(modes) + 1), modes.eigenvalues, result.collectivity, result.scores,
                      result.enabled.astype(float)], -1)
    np.savetxt(os.path.join(out, outputs.MODES_TABLE), table, delimiter=",", comments="",
               header="mode,eigenvalue,collectivity,score,enabled", fmt=["%d", "%.10g", "%.6f", "%.6f", "%d"])
    np.savetxt(os.path.join(out, outputs.FLUCTUATIONS),
               np.stack([np.arange(1, n_atoms + 1), model.resids, result.fluctuations, model.bfactors], -1),
               delimiter=",", comments="", header="atom,residue,msf_A2,bfactor", fmt=["%d", "%d", "%.6g", "%.3f"])
    write_nmd(os.path.join(out, outputs.NMD), model, modes.vectors, modes.eigenvalues)
    with open(os.path.join(out, outputs.ATOMS), "w") as fh:  # the atoms the modes refer to
        fh.write("\n".join(pdb_lines(model, model.coords)) + "\nEND\n")
    amplitude = animation_rmsd * np.sqrt(n_atoms)
    for k in range(6, len(modes)):
        write_animation(os.path.join(out, outputs.animation(k + 1)), model, modes.vectors[k], amplitude,
                        animation_frames)
    return amplitude


def run_pseudoatoms(volume, apix, origin, threshold=None, n_atoms=None, sigma=None, resolution=None,
                    refine_steps=150, seed=0, device="cpu"):
    """Pseudoatoms of a cubic map -> ``(fit, model, threshold, voxels above it, atoms requested)``;
    ``model`` is an :class:`..core.atoms.AtomModel` of the Gaussians (B-factor column: relative weight)."""
    if not apix or apix <= 0:
        raise EngineInputError("the map has no voxel size; give it")
    threshold = threshold if threshold is not None else float(volume.mean() + volume.std())
    n_above = int((volume > threshold).sum())
    if n_above == 0:
        raise EngineInputError("no voxel is above the threshold %g (map values %g to %g)"
                               % (threshold, volume.min(), volume.max()))
    sigma = sigma or 0.75 * apix
    n_atoms = n_atoms or default_count(n_above, apix, sigma)
    if n_atoms < 1:
        raise EngineInputError("the number of pseudoatoms must be at least 1")
    log("fitting %d pseudoatoms (sigma %.2f A) to %d voxels above %.4g" % (n_atoms, sigma, n_above, threshold))
    try:
        fit = fit_pseudoatoms(volume, apix, origin, threshold, n_atoms, sigma, resolution, refine_steps, seed,
                              device)
    except ValueError as exc:
        raise EngineInputError(str(exc)) from None
    n = len(fit.coords)
    model = AtomModel(fit.coords, np.full(n, "C"), np.full(n, "CA"), np.full(n, "PSA"), np.arange(1, n + 1),
                      np.full(n, "A"), 100.0 * fit.weights / fit.weights.max(), weights=fit.weights)
    return fit, model, threshold, n_above, n_atoms


def write_pseudoatoms(out, fit, model, apix, origin, source_name):
    os.makedirs(out, exist_ok=True)
    model.save(os.path.join(out, outputs.PSEUDO_NPZ))
    with open(os.path.join(out, outputs.PSEUDO_PDB), "w") as fh:
        fh.write("REMARK CryoFlex pseudoatoms: Gaussian sigma %.4f A, %d atoms, fitted to %s\n"
                 % (fit.sigma, len(model), source_name))
        fh.write("\n".join(pdb_lines(model, model.coords)) + "\nEND\n")
    write_map(os.path.join(out, outputs.PSEUDO_MAP), fit.model_map, apix, origin)
