"""DEFMap: atomic fluctuations (log10 RMSF) predicted from local cryo-EM density by a 3D CNN.

  defmap predict --map M.mrc [--model model.pt] [--resolution 5] [--atoms A.pdb|.npz] -o OUT
      writes OUT/defmap.mrc (predicted log10 RMSF on the input grid, 0 outside the predicted
      voxels), OUT/defmap_1.5A.mrc (the same on the 1.5 A grid), with --atoms also atoms.csv,
      residues.csv (dynamics_defmap = residue mean of z-scored predictions) and defmap_atoms.pdb
      (dynamics_defmap in the B-factor column), and summary.json.
  defmap train --pair MAP ATOMS [RMSF.npy] ... --resolution 5 -o OUT
      labels: the RMSF file (per-atom RMSF in A, or an MD trajectory (frames, atoms, 3) superposed
      on C-alpha), else the atoms' B-factors; writes OUT/defmap_model.pt, curve.csv/json, summary.json.
  defmap simulate-training-map --atoms A --resolution 5 -o map.mrc
      a map of the model with every atom blurred by its B-factor (training data).
"""
import os

import numpy as np

from ..cli import add_common_args, add_overwrite_arg, fail, select_device
from ..core.runtime import Progress, device_name, log, write_summary
from ..core.atoms import AtomModel, electrons, read_atoms
from ..core.io.mrc import MRCError, read_map, write_map
from ..defmap import outputs
from ..defmap.grid import Grid
from ..defmap.labels import bfactor_rmsf, ca_atoms, trajectory_rmsf
from ..defmap.model_file import DEFAULT_MODEL, ModelFileError, load_model, save_model
from ..defmap.pipeline import atoms_inside, residue_table, run_prediction
from ..defmap.predict import input_grid_map, write_csv
from ..defmap.preprocess import RESOLUTIONS, VOXEL_SIZE, MapError
from ..defmap.simulate import grid_around, simulate_map
from ..defmap.train import TrainConfig, TrainingSet, make_item, pearson, train
from ..nma.formats import pdb_lines


def add_args(p):
    sub = p.add_subparsers(dest="defmap_action", metavar="action")
    pr = sub.add_parser("predict", help="predict log10 RMSF from a map")
    pr.add_argument("--map", required=True)
    pr.add_argument("--model", default=DEFAULT_MODEL,
                    help="DEFMap model file (.pt); default: the model shipped with CryoFlex (5 A, trained on "
                         "simulated maps with B-factor labels; see data/defmap_5A_MODEL_CARD.md)")
    pr.add_argument("--resolution", type=float, default=None,
                    help="resolution (A) the map is low-passed to; must be the model's (default: the model's)")
    pr.add_argument("--atoms", default=None, help="atomic model fitted in the map (.pdb/.cif/.npz)")
    pr.add_argument("--selection", default="protein and not hydrogen")
    pr.add_argument("--threshold", type=float, default=None,
                    help="keep voxels whose standardised value is above this (default 1.0)")
    pr.add_argument("--contour", type=float, default=None,
                    help="instead of --threshold: contour level in the input map's units")
    pr.add_argument("--apix", type=float, default=None, help="voxel size (A) overriding the header")
    pr.add_argument("--atom-lookup", default="nearest", choices=["nearest", "trilinear"])
    pr.add_argument("-o", "--out", required=True)
    add_common_args(pr, batch_size=2048)

    tr = sub.add_parser("train", help="train a model on (map, atoms) pairs")
    tr.add_argument("--pair", nargs="+", action="append", required=True, metavar="MAP ATOMS [RMSF]",
                    help="a map, its fitted model and optionally per-atom RMSF (.npy); repeat per pair")
    tr.add_argument("--resolution", type=float, required=True, help="low-pass of the training maps (A)")
    tr.add_argument("--selection", default="protein and not hydrogen")
    tr.add_argument("--label-distance", type=float, default=None,
                    help="label voxels within this distance (A) of an atom (default: voxels containing one)")
    tr.add_argument("--epochs", type=int, default=100)
    tr.add_argument("--patience", type=int, default=10)
    tr.add_argument("--time-limit", type=float, default=None, help="seconds")
    tr.add_argument("--samples-per-epoch", type=int, default=None)
    tr.add_argument("--val-fraction", type=float, default=0.1)
    tr.add_argument("--lr", type=float, default=5e-5)
    tr.add_argument("--no-augment", action="store_true")
    tr.add_argument("--apix", type=float, default=None, help="voxel size (A) overriding the maps' headers")
    tr.add_argument("-o", "--out", required=True)
    tr.add_argument("--model-out", default=None, help="default: OUT/defmap_model.pt")
    add_overwrite_arg(tr)
    tr.add_argument("--keep-checkpoint", action="store_true",
                    help="keep OUT/checkpoint.pt after training (it is resumed from when present)")
    add_common_args(tr, batch_size=128)

    sm = sub.add_parser("simulate-training-map", help="map of a model blurred per atom by its B-factors")
    sm.add_argument("--atoms", required=True)
    sm.add_argument("--selection", default="protein and not hydrogen")
    sm.add_argument("--resolution", type=float, default=5.0)
    sm.add_argument("--apix", type=float, default=VOXEL_SIZE)
    sm.add_argument("--padding", type=float, default=15.0, help="A around the model (default: %(default)s)")
    sm.add_argument("--noise", type=float, default=0.0, help="noise standard deviation / signal (default 0)")
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument("-o", "--out", required=True, help="output .mrc")
    sm.set_defaults(output_kind="file")


def _read_atoms(path, selection):
    """PDB/mmCIF through ProDy with ``selection``; an engine .npz is reduced to its heavy atoms."""
    try:
        return read_atoms(path, selection if not path.endswith(".npz") else "heavy")
    except (ValueError, FileNotFoundError, ImportError) as exc:
        fail(str(exc))


def _read_map(path, apix):
    try:
        volume, info = read_map(path)
    except MRCError as exc:
        fail(str(exc))
    apix = apix or info.apix
    if not apix or apix <= 0:
        fail("%s: the header has no pixel size (voxel size %r); give it with --apix" % (path, info.apix))
    return volume, apix, info.origin


def _with_bfactors(model, values):
    fields = dict(model.__dict__)
    fields["bfactors"] = np.nan_to_num(np.asarray(values, np.float64), nan=0.0)
    return AtomModel(**fields)


def _predict(args):
    device = select_device(args.device, args.threads)
    if args.resolution is not None and args.resolution not in RESOLUTIONS:
        log("warning: the paper's DEFMap models are for %s A; %.1f A requested" % (RESOLUTIONS, args.resolution))
    try:
        net, meta = load_model(args.model, args.resolution, device)
    except ModelFileError as exc:
        fail(str(exc))
    args.resolution = float(meta["resolution"])
    volume, apix, origin = _read_map(args.map, args.apix)
    model = _read_atoms(args.atoms, args.selection) if args.atoms else None
    warnings = []
    os.makedirs(args.out, exist_ok=True)
    progress = Progress(1, "DEFMap", unit="voxels")
    try:
        result = run_prediction(net, meta, volume, apix, origin, None if model is None else model.coords,
                                None if model is None else model.bfactors, args.threshold, args.contour, device,
                                args.batch_size, args.atom_lookup, progress)
    except MapError as exc:
        fail("%s: %s" % (args.map, exc))
    p = result.prepared
    map15 = result.map_15()
    write_map(os.path.join(args.out, outputs.MAP_15), map15, p.grid.apix, p.grid.origin)
    write_map(os.path.join(args.out, outputs.MAP), input_grid_map(map15, p.grid, p.input_grid), apix, origin)
    files = dict(outputs.PREDICT_FILES)
    figures = {}
    if model is not None:
        if result.inside_fraction < 1:
            warnings.append("%.1f%% of the atoms lie outside the map box; they get no prediction"
                            % (100 * (1 - result.inside_fraction)))
        atoms = result.atoms
        rows = [{"index": i, "chain": model.chains[i], "resid": int(model.resids[i]), "resname": model.resnames[i],
                 "name": model.names[i], **{k: float(v[i]) for k, v in atoms.items()}} for i in range(len(model))]
        write_csv(os.path.join(args.out, outputs.ATOMS), rows)
        residues = residue_table(model, atoms)
        write_csv(os.path.join(args.out, outputs.RESIDUES), residues)
        per_atom = {(r["chain"], r["resid"]): r["dynamics_defmap"] for r in residues}
        dyn = np.array([per_atom[(str(c), int(r))] for c, r in zip(model.chains, model.resids)])
        with open(os.path.join(args.out, outputs.PDB), "w") as fh:
            fh.write("\n".join(pdb_lines(_with_bfactors(model, dyn), model.coords)) + "\nEND\n")
        files.update(outputs.PREDICT_MODEL_FILES)
        if "label_log10_rmsf" in atoms:
            figures = {"r_atoms_pred_vs_bfactor": pearson(atoms["pred_log10_rmsf"], atoms["label_log10_rmsf"]),
                       "r_atoms_intensity_vs_bfactor": pearson(atoms["intensity"], atoms["label_log10_rmsf"]),
                       "r_residues_pred_vs_bfactor": pearson([r["dynamics_defmap"] for r in residues],
                                                             [r["label_z"] for r in residues])}
    for w in warnings:
        log("warning: " + w)
    summary = {"command": "defmap predict", "map": args.map, "input_shape_zyx": list(volume.shape), "apix": apix,
               "origin": list(origin), "grid_1.5A_shape_zyx": list(p.grid.shape), "resolution": args.resolution,
               "model": args.model, "model_training_set": meta.get("training_set"),
               "threshold_rule": result.threshold_rule, "n_kept_voxels": result.n_kept,
               "n_predicted_voxels": len(result.centres), "box_mean": p.mean, "box_std": p.std,
               "n_atoms": None if model is None else len(model), "atoms_inside_fraction": result.inside_fraction,
               "correlations": figures, "warnings": warnings, "seconds": result.seconds,
               "device": device_name(device), "files": files}
    write_summary(os.path.join(args.out, outputs.SUMMARY), summary)
    log("DEFMap: %d voxels predicted in %.1f s" % (len(result.centres), result.seconds["total"]))
    return 0


def _labels(model, path):
    if path is None:
        if not np.any(model.bfactors > 0):
            fail("the atomic model has no B-factors; give per-atom RMSF (.npy) as the pair's third item")
        return bfactor_rmsf(model.bfactors)
    values = np.load(path)
    if values.ndim == 3:
        if values.shape[1] != len(model):
            fail("%s: trajectory has %d atoms, the model %d" % (path, values.shape[1], len(model)))
        return trajectory_rmsf(values, ca_atoms(model))
    if values.shape != (len(model),):
        fail("%s: %s values for %d atoms" % (path, values.shape, len(model)))
    return values


def _train(args):
    device = select_device(args.device, args.threads)
    os.makedirs(args.out, exist_ok=True)
    items, warnings = [], []
    for pair in args.pair:
        if len(pair) not in (2, 3):
            fail("--pair takes MAP ATOMS [RMSF], got %d items" % len(pair))
        volume, apix, origin = _read_map(pair[0], args.apix)
        model = _read_atoms(pair[1], args.selection)
        rmsf = _labels(model, pair[2] if len(pair) == 3 else None)
        grid_in = Grid(tuple(volume.shape), apix, tuple(origin))
        inside = atoms_inside(grid_in, model.coords)
        if inside == 0:
            fail("%s: no atom of %s lies inside the map box" % (pair[0], pair[1]))
        if inside < 1:
            warnings.append("%s: %.1f%% of the atoms lie outside the map" % (pair[1], 100 * (1 - inside)))
        try:
            items.append(make_item(os.path.basename(pair[0]), volume, apix, origin, model.coords, rmsf,
                                   args.resolution, device, args.label_distance))
        except (MapError, ValueError) as exc:
            fail("%s: %s" % (pair[0], exc))
        log("%s: %d labelled voxels" % (pair[0], len(items[-1].labels)))
    tset = TrainingSet(items, args.val_fraction, args.seed)
    config = TrainConfig(epochs=args.epochs, patience=args.patience, batch_size=args.batch_size, lr=args.lr,
                         time_limit=args.time_limit, samples_per_epoch=args.samples_per_epoch,
                         augment=not args.no_augment, seed=args.seed)
    checkpoint = os.path.join(args.out, outputs.CHECKPOINT)
    net, history = train(tset, config, device, checkpoint=checkpoint, curve=os.path.join(args.out, outputs.CURVE),
                         on_mismatch="restart" if args.overwrite else "error")
    best = min(history, key=lambda h: h["val_loss"]) if history else {}
    model_out = args.model_out or os.path.join(args.out, outputs.MODEL)
    label_source = "per-atom RMSF files" if any(len(p) == 3 for p in args.pair) else "B-factors sqrt(3B/8pi^2)"
    meta = {"resolution": args.resolution, "voxel_size": VOXEL_SIZE, "label_mean": tset.label_mean,
            "label_std": tset.label_std, "label_source": label_source, "training_set": tset.names(),
            "label_rule": "nearest atom" + (" within %g A" % args.label_distance if args.label_distance
                                            else ", voxels containing an atom"),
            "lowpass": "gaussian exp(-k^2/(2 kc^2)), kc = 1/resolution", "normalisation":
            "z-score over the resampled box, negatives set to 0", "threshold_rule": "standardised value > 1.0",
            "validation": {"fraction": args.val_fraction, "best_epoch": best.get("epoch"),
                           "val_loss_standardised": best.get("val_loss"), "val_r": best.get("val_r")}}
    save_model(model_out, net, meta)
    if not args.keep_checkpoint and os.path.exists(checkpoint):
        os.remove(checkpoint)  # the model file holds the best weights; the checkpoint is 4x larger
    for w in warnings:
        log("warning: " + w)
    write_summary(os.path.join(args.out, outputs.SUMMARY),
                  {"command": "defmap train", "model": model_out, "n_train": len(tset.train), "n_val": len(tset.val),
                   "epochs": len(history), "validation": meta["validation"], "warnings": warnings,
                   "device": device_name(device), "files": dict(outputs.TRAIN_FILES, model=model_out)})
    log("model written to %s" % model_out)
    return 0


def _simulate(args):
    model = _read_atoms(args.atoms, args.selection)
    grid = grid_around(model.coords, args.apix, args.padding)
    volume = simulate_map(model.coords, model.bfactors, grid, args.resolution, electrons(model.elements),
                          noise=args.noise, seed=args.seed)
    write_map(args.out, volume, grid.apix, grid.origin)
    log("wrote %s: %s voxels of %.2f A" % (args.out, "x".join(map(str, grid.shape[::-1])), grid.apix))
    return 0


def main(args):
    action = getattr(args, "defmap_action", None)
    if action == "predict":
        return _predict(args)
    if action == "train":
        return _train(args)
    if action == "simulate-training-map":
        return _simulate(args)
    fail("defmap needs an action: predict, train or simulate-training-map")
