"""The whole prediction of one map, as the command line, the protocols and the benchmark run it.

:func:`run_prediction` prepares the map, selects the voxels, streams them through the
network and, with an atomic model, derives the per-atom and per-residue values.  It
raises :class:`preprocess.MapError` with a readable message on unusable input.
"""
import time
from dataclasses import dataclass, field

import numpy as np

from .labels import bfactor_rmsf
from .predict import (map_intensity_at_atoms, predict_prepared, prediction_voxels, residue_rows, sample_at_atoms,
                      sparse_map, zscore)
from .preprocess import MapError, PreparedMap, kept_voxels, prepare_map, threshold_rule

__all__ = ["Prediction", "run_prediction", "atoms_inside", "atom_table", "residue_table"]


@dataclass
class Prediction:
    prepared: PreparedMap
    centres: np.ndarray          # (N, 3) predicted voxels (z, y, x) on the 1.5 A grid
    log_rmsf: np.ndarray         # (N,) predicted log10 RMSF
    n_kept: int                  # voxels above the threshold (the rest of ``centres`` are atoms' voxels)
    threshold_rule: str
    atoms: dict = None           # per-atom arrays, see :func:`atom_table`
    inside_fraction: float = None
    seconds: dict = field(default_factory=dict)

    def map_15(self):
        """Predicted log10 RMSF on the 1.5 A grid, 0 outside the predicted voxels."""
        return sparse_map(self.prepared.grid.shape, self.centres, self.log_rmsf)

    def known(self):
        return sparse_map(self.prepared.grid.shape, self.centres, 1.0) > 0


def atoms_inside(grid, coords):
    """Fraction of the atoms whose nearest voxel lies inside ``grid``'s box."""
    return float(grid.contains(grid.nearest_index(coords)).mean())


def atom_table(prediction, coords, bfactors=None, lookup="nearest"):
    """Per-atom arrays: ``pred_log10_rmsf``, ``pred_z`` (z-scored over the model), ``intensity`` (baseline),
    ``intensity_z``, and with B-factors ``label_log10_rmsf`` (sqrt(3B/8pi^2); NaN where B <= 0), ``label_z``."""
    p = prediction.prepared
    pred = sample_at_atoms(prediction.map_15(), p.grid, coords, prediction.known(), lookup)
    intensity = map_intensity_at_atoms(p, coords)
    table = {"pred_log10_rmsf": pred, "pred_z": zscore(pred), "intensity": intensity,
             "intensity_z": zscore(intensity)}
    if bfactors is not None and np.any(np.asarray(bfactors) > 0):
        with np.errstate(divide="ignore", invalid="ignore"):
            label = np.log10(bfactor_rmsf(bfactors))
        table.update(label_log10_rmsf=label, label_z=zscore(label))
    return table


def run_prediction(net, meta, volume, apix, origin, coords=None, bfactors=None, threshold=None, contour=None,
                   device="cpu", batch_size=2048, lookup="nearest", progress=None, amp=False):
    """Predict a map (numpy ``(nz, ny, nx)``, any shape) with a loaded model -> :class:`Prediction`."""
    t0 = time.time()
    prepared = prepare_map(volume, apix, origin, float(meta["resolution"]), device=device, contour=contour)
    seconds = {"prepare": time.time() - t0}
    inside = None
    if coords is not None:
        inside = atoms_inside(prepared.input_grid, coords)
        if inside == 0:
            raise MapError("no atom of the model lies inside the map box (origin %s A, %d x %d x %d voxels of "
                           "%.3f A); are the model and the map in the same frame?"
                           % (tuple(round(o, 2) for o in prepared.input_grid.origin),
                              *prepared.input_grid.shape[::-1], prepared.input_grid.apix))
    kept = kept_voxels(prepared, threshold)
    if len(kept) == 0:
        raise MapError("no voxel is above the threshold (%s); the highest standardised value is %.2f: lower it"
                       % (threshold_rule(prepared, threshold, contour), float(prepared.values.max())))
    centres = prediction_voxels(prepared.grid, kept, coords)
    if progress is not None:
        progress.total = len(centres)
    t1 = time.time()
    log_rmsf = predict_prepared(net, meta, prepared, centres, batch_size, progress, amp)
    seconds["network"] = time.time() - t1
    result = Prediction(prepared, centres, log_rmsf, len(kept), threshold_rule(prepared, threshold, contour),
                        inside_fraction=inside, seconds=seconds)
    if coords is not None:
        result.atoms = atom_table(result, coords, bfactors, lookup)
    seconds["total"] = time.time() - t0
    return result


def residue_table(model, atoms):
    """Per-residue rows from :func:`atom_table` arrays: the means of each column over the residue's
    atoms, ``pred_z`` renamed ``dynamics_defmap`` (the paper's Dynamics^DEFMap)."""
    columns = {("dynamics_defmap" if k == "pred_z" else k): v for k, v in atoms.items()}
    return residue_rows(model, columns)
