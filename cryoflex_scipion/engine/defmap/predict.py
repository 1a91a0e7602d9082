"""Prediction: log10 RMSF at voxels (streamed in batches), maps, per-atom and per-residue values.

- Which voxels: the kept voxels of :func:`preprocess.kept_voxels`, plus, when an atomic model
  is given, the 8 voxels around every atom inside the box, so that every atom has a
  prediction even where the map is weak (the original silently dropped such atoms).
- Maps: predicted log10 RMSF on the 1.5 A grid, 0 outside the predicted voxels, and the same
  brought back to the input grid by nearest voxel (interpolation would mix the zeros into the
  edge of the predicted region); both keep the input origin.
- Atoms: the prediction at the nearest voxel (default) or the trilinear interpolation of the
  predicted voxels among the 8 around the atom (weights renormalised); NaN outside the box.
- Dynamics^DEFMap (the paper's per-residue value): z-score the per-atom predictions over the
  model, then average per residue (chain, residue number).
- Raw-intensity baseline: the standardised map at each atom (trilinear); flexible atoms have
  weaker density, so its correlation with log10 RMSF is expected to be negative.
"""
import numpy as np
import torch

from ..core.runtime import run_batches
from .grid import nearest_resample
from .subvoxels import SubvoxelSource
from .train import bf16_autocast, pearson

__all__ = ["prediction_voxels", "predict_voxels", "sparse_map", "sample_at_atoms", "map_intensity_at_atoms",
           "zscore", "residue_rows", "write_csv", "pearson", "input_grid_map", "predict_prepared"]

_CORNERS = np.stack(np.meshgrid([0, 1], [0, 1], [0, 1], indexing="ij"), -1).reshape(-1, 3)


def prediction_voxels(grid, kept, coords=None):
    """Unique (z, y, x) voxels ``(N, 3)`` to predict: ``kept`` plus the 8 voxels around each atom."""
    if coords is None or len(coords) == 0:
        return np.asarray(kept, np.int64).reshape(-1, 3)
    low = np.floor(grid.xyz_to_index(coords)).astype(np.int64)
    around = (low[:, None, :] + _CORNERS[None]).reshape(-1, 3)
    around = around[grid.contains(around)]
    return np.unique(np.concatenate([np.asarray(kept, np.int64).reshape(-1, 3), around]), axis=0)


def predict_voxels(net, source, centres, label_mean, label_std, batch_size=2048, progress=None, amp=False):
    """log10 RMSF ``(N,)`` float32 at ``centres`` (z, y, x) of a :class:`subvoxels.SubvoxelSource`.

    Batches are gathered on the source's device and never all held at once; on CUDA out of
    memory the batch is halved (:func:`cli.run_batches`).  ``progress``: a :class:`cli.Progress`.
    ``amp``: bfloat16 autocast on CUDA.
    """
    use_amp = bool(amp) and source.device.type == "cuda"
    out = np.empty(len(centres), dtype=np.float32)
    net.eval()

    def work(start, stop):
        with torch.inference_mode(), bf16_autocast(use_amp):
            pred = net(source.extract(centres[start:stop]))
        out[start:stop] = (pred.float().cpu().numpy() * label_std + label_mean)
        if progress is not None:
            progress.update(stop - start)

    run_batches(len(centres), batch_size, work, source.device, label="DEFMap prediction")
    return out


def sparse_map(shape, centres, values, fill=0.0):
    """Dense ``(nz, ny, nx)`` float32 map with ``values`` at ``centres`` and ``fill`` elsewhere."""
    out = np.full(shape, fill, dtype=np.float32)
    out[tuple(np.asarray(centres).T)] = values
    return out


def input_grid_map(values_15, grid_15, input_grid):
    """A map on the 1.5 A grid brought back to the input grid (nearest voxel, 0 outside)."""
    return nearest_resample(values_15, grid_15, input_grid, fill=0.0)


def sample_at_atoms(volume, grid, coords, known=None, mode="nearest"):
    """Per-atom values of ``volume`` (numpy, on ``grid``) at ``coords`` (A, 3; x, y, z A).

    ``known`` (bool map, optional): voxels that hold a value; others are ignored
    (``nearest`` gives NaN there, ``trilinear`` renormalises over the known corners).
    Atoms outside the box get NaN.
    """
    volume = np.asarray(volume)
    known = np.ones(volume.shape, bool) if known is None else np.asarray(known, bool)
    if mode == "nearest":
        idx = grid.nearest_index(coords)
        inside = grid.contains(idx)
        out = np.full(len(idx), np.nan)
        sel = tuple(idx[inside].T)
        out[inside] = np.where(known[sel], volume[sel], np.nan)
        return out
    if mode != "trilinear":
        raise ValueError("mode must be 'nearest' or 'trilinear', not %r" % mode)
    frac = grid.xyz_to_index(coords)
    low = np.floor(frac).astype(np.int64)
    t = frac - low
    num, den = np.zeros(len(frac)), np.zeros(len(frac))
    for corner in _CORNERS:
        idx = low + corner
        w = np.prod(np.where(corner == 1, t, 1 - t), axis=-1)
        ok = grid.contains(idx)
        sel = tuple(np.clip(idx, 0, np.asarray(grid.shape) - 1).T)
        ok &= known[sel]
        num += np.where(ok, w * volume[sel], 0.0)
        den += np.where(ok, w, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    out[(den < 1e-9) | ~np.all((frac > -1) & (frac < np.asarray(grid.shape)), axis=-1)] = np.nan
    return out


def map_intensity_at_atoms(prepared, coords):
    """Raw-intensity baseline: the standardised (clamped) prepared map at each atom, trilinear."""
    return sample_at_atoms(prepared.values.cpu().numpy(), prepared.grid, coords, mode="trilinear")


def zscore(values):
    """``(v - mean) / std`` over the finite entries (NaN stay NaN)."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    if ok.sum() < 2:
        return np.full_like(v, np.nan)
    sd = v[ok].std()
    return (v - v[ok].mean()) / (sd if sd > 0 else 1.0)


def residue_rows(model, columns):
    """Per-residue means of per-atom ``columns`` (name -> (A,) array), residues in model order.

    Rows: chain, resid, resname, n_atoms, then each column's mean over the residue's finite values.
    """
    keys = [(str(c), int(r)) for c, r in zip(model.chains, model.resids)]
    order, seen = [], {}
    for i, k in enumerate(keys):
        if k not in seen:
            seen[k] = []
            order.append(k)
        seen[k].append(i)
    rows = []
    for k in order:
        atoms = np.asarray(seen[k])
        row = {"chain": k[0], "resid": k[1], "resname": str(model.resnames[atoms[0]]), "n_atoms": len(atoms)}
        for name, values in columns.items():
            v = np.asarray(values, np.float64)[atoms]
            v = v[np.isfinite(v)]
            row[name] = float(v.mean()) if len(v) else float("nan")
        rows.append(row)
    return rows


def write_csv(path, rows):
    """Rows (dicts with the same keys) as CSV; floats with 6 significant digits, NaN as empty."""
    if not rows:
        open(path, "w").close()
        return
    keys = list(rows[0].keys())

    def fmt(v):
        if isinstance(v, (float, np.floating)):
            return "" if not np.isfinite(v) else "%.6g" % v
        return str(v)

    with open(path, "w") as fh:
        fh.write(",".join(keys) + "\n")
        for r in rows:
            fh.write(",".join(fmt(r[k]) for k in keys) + "\n")


def predict_prepared(net, meta, prepared, centres, batch_size=2048, progress=None, amp=False):
    """Predictions at ``centres`` of a :class:`preprocess.PreparedMap` with a loaded model."""
    source = SubvoxelSource(prepared.values, box=int(meta.get("box", 10)))
    return predict_voxels(net, source, centres, float(meta["label_mean"]), float(meta["label_std"]),
                          batch_size, progress, amp)

