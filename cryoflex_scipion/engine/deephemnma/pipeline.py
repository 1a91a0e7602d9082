"""DeepHEMNMA training and prediction of a particle set, as the command line, the protocols and the
benchmarks run them.

Training: :func:`plan_training` (working size, Mahalanobis outliers, training/validation split),
:func:`train_network` (one process, or one per GPU through DDP; resumes the same job), then
:func:`save_trained_model`.  Prediction: :func:`check_geometry`, :func:`predict_set` (streamed),
:func:`merge_known` (particles aligned by HEMNMA keep their values) and :func:`write_prediction`.
File names are in :mod:`.outputs`; unusable input raises :class:`..core.runtime.EngineInputError`.
"""
import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..core.geometry import euler_to_quaternion
from ..core.metrics import mahalanobis
from ..core.runtime import EngineInputError, device_name
from . import outputs
from .data import ParticleImages, working_geometry
from .labels import outlier_mask
from .model_file import save_model
from .network import count_parameters
from .predict import predict_particles
from .train import TrainingJob, evaluate, job_data, run_distributed, run_job, split

__all__ = ["TrainingPlan", "plan_training", "make_job", "train_network", "save_trained_model", "check_geometry",
           "predict_set", "merge_known", "write_prediction"]


@dataclass
class TrainingPlan:
    n_particles: int
    box: int
    apix: float
    size: int                 # working size (px)
    working_apix: float
    outliers: np.ndarray      # bool per particle: left out of training and validation
    distances: np.ndarray     # Mahalanobis distance of the amplitudes
    train: np.ndarray         # positions
    val: np.ndarray
    outlier_threshold: float


def plan_training(labels, box, apix, size=128, outlier_threshold=3.2, val_fraction=0.1, val_count=None, seed=0):
    """Working geometry, outliers and split of a labelled set -> :class:`TrainingPlan`."""
    work, work_apix = working_geometry(box, apix, size)
    if work < 16:
        raise EngineInputError("images of %d px are too small for the network (at least 16 px)" % work)
    n = len(labels)
    outliers = outlier_mask(labels.amplitudes, outlier_threshold)
    m = labels.amplitudes.shape[1]
    distances = mahalanobis(labels.amplitudes) if m and n > m + 1 else np.zeros(n)
    train, val = split(n, ~outliers, val_fraction, val_count, seed)
    if len(train) == 0:
        raise EngineInputError("no particle left for training (%d particles, %d outliers)" % (n, outliers.sum()))
    return TrainingPlan(n, box, apix, work, work_apix, outliers, distances, train, val, outlier_threshold)


def make_job(particles, labels, plan, net_config, config, out, data_root=None, apix=None, cache="auto",
             on_mismatch="restart"):
    """The :class:`.train.TrainingJob` of a plan, with its checkpoint and curves in ``out``; ``on_mismatch``:
    what a checkpoint of another job in ``out`` does (:func:`..core.training.checkpoint.load_checkpoint`)."""
    os.makedirs(out, exist_ok=True)
    return TrainingJob(os.path.abspath(particles), labels, plan.train, plan.val, plan.size, net_config, config,
                       data_root=data_root, apix=apix, cache=cache, checkpoint=os.path.join(out, outputs.CHECKPOINT),
                       curves=os.path.join(out, outputs.CURVES), on_mismatch=on_mismatch)


def train_network(job, device, n_gpus=1):
    """Train ``job`` on ``device`` (one process) or on the first ``n_gpus`` visible GPUs (DDP).
    Returns ``(net on device, history, data, device label, seconds)``."""
    start = time.time()
    if n_gpus > 1:
        net, history = run_distributed(job, n_gpus, "cuda")
        label = "%d GPUs (%s)" % (n_gpus, os.environ.get("CUDA_VISIBLE_DEVICES", ""))
        device = torch.device("cuda", 0)
        data = job_data(job, device)
    else:
        net, history, data = run_job(job, device)
        label = device_name(device)
    return net.to(device), history, data, label, time.time() - start


def save_trained_model(out, net, data, plan, labels, history, config, seconds, device, device_label, reference=""):
    """Final validation, the model file and the plan's split; returns ``(validation figures, metadata)``."""
    np.savez(os.path.join(out, outputs.TRAINING_SET), train=plan.train, validation=plan.val, outlier=plan.outliers,
             mahalanobis=plan.distances)
    final = evaluate(net, data, plan.val, device, config) if len(plan.val) else {}
    meta = {"labels": data.scaler.to_dict(), "mode_numbers": labels.mode_numbers, "working_size": plan.size,
            "working_apix": plan.working_apix, "input_box": plan.box, "input_apix": plan.apix,
            "reference": reference, "label_source": labels.source,
            "training": {"n_particles": plan.n_particles, "n_train": len(plan.train), "n_validation": len(plan.val),
                         "outliers": int(plan.outliers.sum()), "outlier_threshold": plan.outlier_threshold,
                         "epochs": len(history), "best_epoch": getattr(net, "best_epoch", None), "seconds": seconds,
                         "batch_size": config.batch_size, "lr": config.lr, "augment": config.augment,
                         "device": device_label},
            "validation": final}
    save_model(os.path.join(out, outputs.MODEL), net, meta)
    meta["n_parameters"] = count_parameters(net)
    return final, meta


def check_geometry(meta, box, apix):
    """Prediction images must show the model's field of view (box x pixel size) with at least its
    working size in pixels: then both are Fourier-cropped to the same pixel size."""
    fov, trained_fov = box * apix, meta["input_box"] * meta["input_apix"]
    if abs(fov - trained_fov) > 1e-3 * trained_fov or box < meta["working_size"]:
        raise EngineInputError(
            "images are %d px at %.4g A/px (%.1f A wide) but the model was trained on %d px at %.4g A/px "
            "(%.1f A wide, used at %d px): pixel size x box must match and the box be at least %d px; "
            "rescale or re-extract the particles, or train on images like these"
            % (box, apix, fov, meta["input_box"], meta["input_apix"], trained_fov, meta["working_size"],
               meta["working_size"]))


def predict_set(net, scaler, meta, table, device, batch_size=1024, amp=True, data_root=None, progress=None):
    """Predictions for every particle of ``table`` (read and prepared batch by batch): a dict of numpy
    arrays (``amplitudes``, ``quaternion``, ``euler``, ``origin_A``)."""
    images = ParticleImages(table, meta["working_size"], data_root)
    use_amp = device.type == "cuda" and amp
    channels_last = device.type == "cuda"
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    try:
        return predict_particles(net, images, scaler, device, batch_size, use_amp, channels_last, progress)
    finally:
        images.close()


def _image_keys(table, data_root):
    resolved = {k: os.path.realpath(v) for k, v in table.resolved_files(data_root).items()}
    return np.char.add(np.char.add(np.array([resolved[str(f)] for f in table.image_file]).astype(str), "@"),
                       np.asarray(table.image_index).astype(str))


def merge_known(table, result, labelled, known, data_root=None):
    """Particles of ``table`` that are also in ``labelled`` (same stack file and index) take the known
    labels ``known`` (:class:`.labels.Labels` of ``labelled``) in ``result``; returns the mask of the
    particles that keep their prediction."""
    index = {k: i for i, k in enumerate(_image_keys(labelled, data_root))}
    rows = np.array([index.get(k, -1) for k in _image_keys(table, data_root)])
    hit = rows >= 0
    result["euler"][hit] = known.euler[rows[hit]]
    result["origin_A"][hit] = known.origin_A[rows[hit]]
    result["amplitudes"][hit] = known.amplitudes[rows[hit]]
    if hit.any():
        result["quaternion"][hit] = euler_to_quaternion(known.euler[rows[hit]])
    return ~hit


def write_prediction(out, table, result, mode_numbers, predicted, data_root=None):
    """The predicted STAR (angles, origins, amplitudes, ``cryoflexPredicted``) and ``results.npz``."""
    os.makedirs(out, exist_ok=True)
    out_table = table.with_results(result["euler"], result["origin_A"], result["amplitudes"], mode_numbers,
                                   data_root)
    out_table.extra["cryoflexPredicted"] = np.asarray(predicted).astype(np.int64)
    out_table.to_star(os.path.join(out, outputs.STAR), relative_to=out)
    np.savez(os.path.join(out, outputs.RESULTS), mode_numbers=np.array(mode_numbers), predicted=predicted, **result)
