"""DeepHEMNMA: a ResNet learns normal-mode amplitudes, orientations and shifts from labelled particles.

  deephemnma train --particles P.star [--labels-npz L.npz | --labels-csv ground_truth.csv] -o OUT
      labels: the STAR's cryoflexAmplitude<mode> columns and poses (the hemnma command's output),
      or an .npz with euler, origin_A, amplitudes[, mode_numbers] (hemnma's results.npz), or the
      simulate command's ground_truth.csv, row by row with the particles.  Writes OUT/model.pt,
      OUT/checkpoint.pt (an existing one is resumed when it was written for the same particles,
      labels and settings; otherwise it is moved aside as checkpoint.pt.stale and training starts
      from scratch), OUT/curves.csv/.json, OUT/training_set.npz (training/validation positions,
      Mahalanobis distances, outliers) and OUT/summary.json.
  deephemnma predict --model OUT/model.pt --particles P.star -o PRED [--merge-with LABELLED.star]
      writes PRED/particles.star (RELION 3.1: angles, origins in A, cryoflexAmplitude<mode>,
      cryoflexPredicted), PRED/results.npz (euler, origin_A, amplitudes, quaternion) and
      PRED/summary.json.  With --merge-with, particles of that STAR (matched by image) keep its
      values, as the paper does for the particles HEMNMA aligned.
See cryoflex_scipion.engine.deephemnma for the method.
"""
import os
import time

import numpy as np
import torch

from ..cli import add_amplitude_contrast_arg, add_common_args, add_overwrite_arg, fail, gpu_ids, select_device
from ..core.io.mrc import MRCError
from ..core.io.particles import read_particles
from ..core.io.star import StarError
from ..core.runtime import EngineInputError, Progress, device_name, log, write_summary
from ..deephemnma import outputs
from ..deephemnma.labels import LabelError, labels_from_csv, labels_from_npz, labels_from_table, parse_mode_list
from ..deephemnma.model_file import ModelFileError, load_model
from ..deephemnma.network import DeepHEMNMANet
from ..deephemnma.pipeline import (check_geometry, make_job, merge_known, plan_training, predict_set,
                                   save_trained_model, train_network, write_prediction)
from ..deephemnma.train import TrainConfig


def _ints(text):
    return tuple(int(v) for v in str(text).replace(" ", "").split(",") if v)


def add_args(p):
    sub = p.add_subparsers(dest="deephemnma_action", metavar="action")
    tr = sub.add_parser("train", help="train a network on labelled particles")
    tr.add_argument("--particles", required=True, help="RELION .star (or cryoSPARC .cs with --labels-*)")
    src = tr.add_mutually_exclusive_group()
    src.add_argument("--labels-npz", default=None, help=".npz with euler, origin_A, amplitudes[, mode_numbers]")
    src.add_argument("--labels-csv", default=None, help="ground_truth.csv of the simulate command")
    tr.add_argument("--modes-list", default=None,
                    help="mode numbers to learn, e.g. '7-9' (default: all in the labels; for --labels-csv, "
                         "the numbers of its amplitude_1.. columns)")
    tr.add_argument("--size", type=int, default=128, help="working image size, at most (default: %(default)s px)")
    tr.add_argument("--arch", default="shared", choices=["shared", "separate"],
                    help="one backbone with three heads, or one network per target (default: %(default)s)")
    tr.add_argument("--epochs", type=int, default=100)
    tr.add_argument("--time-limit", type=float, default=None,
                    help="seconds of training; the learning-rate schedule is fitted to it")
    tr.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default: %(default)s)")
    tr.add_argument("--warmup-epochs", type=float, default=3.0)
    tr.add_argument("--weight-decay", type=float, default=1e-5)
    tr.add_argument("--val-fraction", type=float, default=0.1)
    tr.add_argument("--val-count", type=int, default=None, help="validation particles (overrides --val-fraction)")
    tr.add_argument("--outlier-threshold", type=float, default=3.2,
                    help="leave out particles whose amplitudes' Mahalanobis distance exceeds this (0: keep all)")
    tr.add_argument("--no-augment", action="store_true", help="no in-plane rotation augmentation")
    tr.add_argument("--no-amp", action="store_true", help="float32 on CUDA instead of bfloat16 autocast")
    tr.add_argument("--no-cuda-graph", action="store_true",
                    help="launch every training step from Python instead of replaying it as a CUDA graph")
    tr.add_argument("--blocks", default="3,4,6,3", help="residual blocks per stage (default: ResNet-34's)")
    tr.add_argument("--width", type=int, default=64, help="channels of the first stage (default: %(default)s)")
    tr.add_argument("--features", type=int, default=1000, help="backbone outputs (default: %(default)s)")
    tr.add_argument("--hidden", default="512,128", help="head hidden layers (default: %(default)s)")
    tr.add_argument("--dropout", type=float, default=0.5)
    tr.add_argument("--cache", default="auto", choices=["auto", "device", "host", "none"],
                    help="keep prepared images in GPU (device) or host memory, or read them every epoch")
    tr.add_argument("--checkpoint-seconds", type=float, default=0.0,
                    help="least seconds between checkpoints (default 0: after every epoch)")
    tr.add_argument("--reference", default="", help="description of the reference model and modes (metadata)")
    tr.add_argument("--data-root", default=None)
    add_amplitude_contrast_arg(tr)
    tr.add_argument("--apix", type=float, default=None, help="override the particles' pixel size")
    tr.add_argument("--gpus", default=None, help="GPU ids ('0,1' or 'all'); several: one process per GPU (DDP)")
    tr.add_argument("-o", "--out", required=True)
    add_overwrite_arg(tr)
    add_common_args(tr, batch_size=256)

    pr = sub.add_parser("predict", help="predict amplitudes, angles and shifts with a trained model")
    pr.add_argument("--model", required=True, help="model.pt written by 'deephemnma train'")
    pr.add_argument("--particles", required=True, help="RELION .star or cryoSPARC .cs")
    pr.add_argument("--modes-list", default=None, help="modes expected from the model, e.g. '7-9' (checked)")
    pr.add_argument("--merge-with", default=None,
                    help="labelled STAR (e.g. HEMNMA's output): its particles keep its values")
    pr.add_argument("--no-amp", action="store_true", help="float32 on CUDA instead of bfloat16 autocast")
    pr.add_argument("--data-root", default=None)
    add_amplitude_contrast_arg(pr)
    pr.add_argument("--apix", type=float, default=None, help="override the particles' pixel size")
    pr.add_argument("--gpus", default=None, help="GPU id to use (the first if several)")
    pr.add_argument("-o", "--out", required=True)
    add_common_args(pr, batch_size=1024)


def _read_table(path, apix, data_root, amplitude_contrast=None):
    try:
        table = read_particles(path, apix=apix, check_files=True, data_root=data_root,
                               amplitude_contrast=amplitude_contrast)
    except (StarError, FileNotFoundError, MRCError, ValueError, OSError) as exc:
        fail(str(exc))
    except IndexError:  # the STAR reader does not take an empty particle loop
        fail("%s holds no particles (or its particle block cannot be read)" % path)
    if len(table) == 0:
        fail("%s holds no particles" % path)
    try:
        box, apix = table.uniform()
    except StarError as exc:
        fail(str(exc))
    return table, box, apix


def _gpu_positions(spec):
    """Positions among the visible GPUs given by ``--gpus`` ('all' = every one)."""
    if not spec:
        return []
    if spec.strip() == "all":
        return list(range(torch.cuda.device_count()))
    return [int(t) for t in spec.replace(" ", ",").split(",") if t]


def _device(args):
    positions = _gpu_positions(args.gpus)
    if positions and args.device != "cpu":
        if not torch.cuda.is_available():
            fail("--gpus %s was requested but torch sees no GPU" % args.gpus)
        if positions[0] >= torch.cuda.device_count():
            fail("--gpus asks for GPU %d but %d are visible" % (positions[0], torch.cuda.device_count()))
        select_device("cuda", args.threads)
        return torch.device("cuda", positions[0])
    return select_device(args.device, args.threads)


def _labels(args, table):
    try:
        modes = parse_mode_list(args.modes_list)
        if args.labels_npz:
            labels = labels_from_npz(args.labels_npz, modes)
        elif args.labels_csv:
            labels = labels_from_csv(args.labels_csv, modes)
        else:
            labels = labels_from_table(table, modes, args.particles)
    except LabelError as exc:
        fail(str(exc))
    if len(labels) != len(table):
        fail("%s has labels for %d particles but %s holds %d; they must match row by row"
             % (labels.source, len(labels), args.particles, len(table)))
    return labels


def _train(args):
    table, box, apix = _read_table(args.particles, args.apix, args.data_root, args.amplitude_contrast)
    labels = _labels(args, table)
    try:
        plan = plan_training(labels, box, apix, args.size, args.outlier_threshold, args.val_fraction, args.val_count,
                             args.seed)
        blocks, hidden = _ints(args.blocks), _ints(args.hidden)
    except EngineInputError as exc:
        fail(str(exc))
    except ValueError:
        fail("--blocks and --hidden take comma-separated integers, e.g. 3,4,6,3 and 512,128")
    if args.batch_size < 1 or args.epochs < 1:
        fail("--batch-size and --epochs must be at least 1")
    net_config = DeepHEMNMANet(len(labels.mode_numbers), args.arch, blocks, args.width, args.features, hidden,
                               args.dropout).config
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, warmup_epochs=args.warmup_epochs,
                         weight_decay=args.weight_decay, time_limit=args.time_limit, augment=not args.no_augment,
                         amp=not args.no_amp, seed=args.seed, checkpoint_seconds=args.checkpoint_seconds,
                         cuda_graph=not args.no_cuda_graph)
    job = make_job(args.particles, labels, plan, net_config, config, args.out, args.data_root, args.apix, args.cache,
                   on_mismatch="restart" if args.overwrite else "error")
    log("DeepHEMNMA training: %d particles (%d outliers left out, Mahalanobis > %g), %d training, %d validation; "
        "%d px at %.3f A/px (from %d px at %.3f A/px); modes %s; %s network"
        % (len(table), plan.outliers.sum(), args.outlier_threshold, len(plan.train), len(plan.val), plan.size,
           plan.working_apix, box, apix, labels.mode_numbers, args.arch))
    gpus = _gpu_positions(args.gpus) if args.device != "cpu" else []
    if len(gpus) > 1:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_ids(args.gpus))
        device = torch.device("cuda", 0)
    else:
        device = _device(args)
    try:
        net, history, data, device_label, seconds = train_network(job, device, max(1, len(gpus)))
    except ValueError as exc:  # unusable inputs met while training (a message for the user)
        fail(str(exc))
    except Exception as exc:
        if len(gpus) <= 1:
            raise
        # a worker's traceback was printed by torch.multiprocessing
        fail("a training process failed (%s); rerun to resume from the checkpoint" % str(exc).splitlines()[0])
    final, meta = save_trained_model(args.out, net, data, plan, labels, history, config, seconds, device,
                                     device_label, args.reference)
    summary = {"command": "deephemnma train", "n_particles": len(table), "box": box, "apix": apix,
               "working_size": plan.size, "working_apix": plan.working_apix, "modes": labels.mode_numbers,
               "arch": args.arch, "n_parameters": meta["n_parameters"], "n_train": len(plan.train),
               "n_validation": len(plan.val), "outliers": int(plan.outliers.sum()), "epochs": len(history),
               "best_epoch": getattr(net, "best_epoch", None), "device": device_label, "seconds": seconds,
               "train_samples_per_second": sum(h["samples"] for h in history) / max(seconds, 1e-9)
               if history else 0.0,
               "validation": final, "label_source": labels.source, "files": outputs.TRAIN_FILES}
    write_summary(os.path.join(args.out, outputs.SUMMARY), summary)
    log("done: %d epochs in %.1f s; validation: amplitudes %.3g, angles %.2f deg, shifts %.3f A"
        % (len(history), seconds, final.get("val_amplitude_mae", float("nan")),
           final.get("val_angle_deg", float("nan")), final.get("val_shift_A", float("nan"))))
    return 0


def _merge(args, table, result, mode_numbers):
    """Particles of ``--merge-with`` keep its values; returns the mask of predicted particles."""
    try:
        labelled = read_particles(args.merge_with, data_root=args.data_root)
        known = labels_from_table(labelled, mode_numbers, args.merge_with)
        return merge_known(table, result, labelled, known, args.data_root)
    except (StarError, FileNotFoundError, MRCError, LabelError, ValueError) as exc:
        fail(str(exc))


def _predict(args):
    try:
        wanted = parse_mode_list(args.modes_list)
    except LabelError as exc:
        fail(str(exc))
    if args.batch_size < 1:
        fail("--batch-size must be at least 1 (got %d)" % args.batch_size)
    device = _device(args)
    try:
        net, scaler, meta = load_model(args.model, device, wanted)
    except ModelFileError as exc:
        fail(str(exc))
    table, box, apix = _read_table(args.particles, args.apix, args.data_root, args.amplitude_contrast)
    try:
        check_geometry(meta, box, apix)
    except EngineInputError as exc:
        fail("%s: %s" % (args.particles, exc))
    numbers = [int(m) for m in meta["mode_numbers"]]
    log("DeepHEMNMA prediction: %d particles, %d px -> %d px, modes %s, on %s"
        % (len(table), box, meta["working_size"], numbers, device_name(device)))
    progress = Progress(len(table), "deephemnma predict")
    start = time.time()
    try:
        result = predict_set(net, scaler, meta, table, device, args.batch_size, not args.no_amp, args.data_root,
                             progress)
    except MRCError as exc:
        fail(str(exc))
    inference_s = time.time() - start
    predicted = np.ones(len(table), bool)
    if args.merge_with:
        predicted = _merge(args, table, result, numbers)
        log("%d particles keep their values from %s" % ((~predicted).sum(), args.merge_with))
    write_prediction(args.out, table, result, numbers, predicted, args.data_root)
    seconds = time.time() - start
    amp = device.type == "cuda" and not args.no_amp
    summary = {"command": "deephemnma predict", "model": os.path.abspath(args.model), "n_particles": len(table),
               "box": box, "apix": apix, "working_size": meta["working_size"], "modes": numbers,
               "device": device_name(device), "bf16": amp, "batch_size": args.batch_size,
               "inference_seconds": inference_s, "particles_per_second": len(table) / max(inference_s, 1e-9),
               "seconds": seconds, "n_predicted": int(predicted.sum()), "n_merged": int((~predicted).sum()),
               "amplitude_mean": result["amplitudes"].mean(0), "amplitude_std": result["amplitudes"].std(0),
               "files": outputs.PREDICT_FILES}
    write_summary(os.path.join(args.out, outputs.SUMMARY), summary)
    log("done: %d particles in %.1f s (%.0f/s for reading and inference)"
        % (len(table), seconds, summary["particles_per_second"]))
    return 0


def main(args):
    if args.deephemnma_action == "train":
        return _train(args)
    if args.deephemnma_action == "predict":
        return _predict(args)
    fail("choose an action: deephemnma train | predict")
