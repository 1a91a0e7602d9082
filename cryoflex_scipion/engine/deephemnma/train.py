"""Training DeepHEMNMA: L1 loss, Adam, warmup + cosine learning rate, checkpoints, several GPUs.

The machinery (image cache, checkpoints and their fingerprint, epoch plan, CUDA-graph step, DDP
launch, curves) is :mod:`..core.training`'s; this module holds DeepHEMNMA's parts: the labels as
targets, augmentation, the loss, validation and the loop that joins them.

Settings and why:
- Loss L1 on standardised labels, Adam, weight decay 1e-5, dropout 0.5 in the heads: the paper's.
- Batch 256 (the paper used 2): a ResNet-34 on 128-px images needs batches of hundreds to keep an
  H200 busy.  Measured (training step as a CUDA graph, bf16): 16,600 images/s at 128, 20,600 at 256,
  23,400 at 512; 256 takes twice the steps of 512 for 12% fewer images per second.  The learning
  rate follows the batch (1e-3 for Adam at 256, the usual value for ResNets with BatchNorm), after
  a linear warmup (3 epochs by default: large early steps on a randomly initialised deep network
  diverge) and then a cosine decay to 1% over the run, which ends training at a small step size
  without a patience rule.  Zero-initialised residual branches (:mod:`.network`) keep the start
  stable at this batch size.
- Time limit: from the second epoch on, the number of epochs is set to what fits in the time left
  at the mean epoch time (only ever lowered), so the cosine schedule completes within the limit
  instead of being cut off at a large learning rate; the plan is saved in the checkpoint, so a
  resumed run continues the same schedule.
- Augmentation: every training image is turned in-plane by a random angle with its labels turned
  alike (:mod:`.augment`); validation images never are.
- bfloat16 autocast and channels-last convolutions on CUDA; the loss is computed in float32; with one
  process on CUDA the whole step is replayed as a CUDA graph (:class:`TrainStep`).
- Reproducible and resumable: each epoch's order, augmentation angles and dropout masks come from
  seeds of (seed, epoch[, rank]); the checkpoint (written after every epoch, or at most every
  ``checkpoint_seconds``, and always after the last) holds the weights, the optimiser, the best
  weights, the history and the planned epochs, so an interrupted run continues identically (bit for
  bit on a CPU; cuDNN kernels are not bitwise deterministic).  It resumes only a run of the same
  images, labels, split, network and settings (:func:`training_fingerprint`; speed settings such as
  the checkpoint interval do not count); a rerun with other data or settings trains afresh.
- Several processes (one per GPU): :func:`run_distributed` starts them (``torch.distributed``,
  NCCL on GPUs, gloo on CPUs); each takes its share of every global batch (the global batch and so
  the hyper-parameters do not depend on the number of GPUs), DistributedDataParallel averages the
  gradients, and rank 0 validates and writes the checkpoint.
"""
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..core.geometry import angular_distance, quaternion_to_matrix
from ..core.runtime import log
from ..core.training import ddp
from ..core.fingerprint import Fingerprint, digest
from ..core.training.checkpoint import load_checkpoint, module_state, save_checkpoint
from ..core.training.curves import save_curves
from ..core.training.schedule import EpochPlan, lr_at
from ..core.training.steps import GraphStep, autocast, load_optimizer_state, make_adam, set_lr
from .augment import apply_turn, rotate_images_exact, turn_factors
from .labels import LabelScaler, target_loss
from .network import build_network

__all__ = ["TrainConfig", "SPEED_SETTINGS", "CURVE_KEYS", "TrainingData", "split", "train", "evaluate",
           "training_fingerprint", "TrainingJob", "job_data", "run_job", "run_distributed", "TrainStep",
           "make_optimizer", "set_lr"]


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-3
    warmup_epochs: float = 3.0
    final_lr_fraction: float = 0.01
    weight_decay: float = 1e-5
    time_limit: float = None        # seconds for the whole training (None: no limit)
    augment: bool = True
    amp: bool = True                # bfloat16 autocast (CUDA only)
    channels_last: bool = True      # (CUDA only)
    seed: int = 0
    eval_batch_size: int = 1024
    checkpoint_seconds: float = 0.0  # least time between checkpoints (0: after every epoch)
    samples_per_epoch: int = None
    cuda_graph: bool = True         # replay the training step as a CUDA graph (one process on CUDA)


# Settings of speed and I/O only, left out of the checkpoint's fingerprint: a rerun that changes them
# resumes.  (Channels-last and the CUDA graph change the kernels, not the computation; the validation
# batch size changes a sum's rounding at most.)
SPEED_SETTINGS = ("checkpoint_seconds", "eval_batch_size", "cuda_graph", "channels_last")

# Columns of curves.csv (curves.json has every key of each epoch's record).
CURVE_KEYS = ["epoch", "lr", "train_loss", "train_amplitudes", "train_quaternion", "train_shifts", "val_loss",
              "val_amplitude_mae", "val_angle_deg", "val_shift_A", "seconds", "samples"]


class TrainingData:
    """Prepared images (:class:`.data.ParticleImages`), labels (:class:`.labels.Labels`, aligned with the
    images' positions), training and validation positions, and the label standardisation."""

    def __init__(self, images, labels, train, val, scaler=None):
        self.images, self.labels = images, labels
        self.train, self.val = np.asarray(train, np.int64), np.asarray(val, np.int64)
        self.scaler = scaler or LabelScaler.fit(labels.subset(self.train))
        self._tensors = {}

    def label_tensors(self, positions, device):
        """Raw labels (float32 tensors on ``device``): amplitudes, quaternion, origin_A."""
        key = str(device)
        if key not in self._tensors:
            self._tensors[key] = {
                "amplitudes": torch.as_tensor(self.labels.amplitudes, dtype=torch.float32, device=device),
                "quaternion": torch.as_tensor(self.labels.quaternion, dtype=torch.float32, device=device),
                "origin_A": torch.as_tensor(self.labels.origin_A, dtype=torch.float32, device=device)}
        idx = torch.as_tensor(positions, device=device)
        return {k: v.index_select(0, idx) for k, v in self._tensors[key].items()}

    def fingerprint(self):
        """What training depends on in the data: the images (:meth:`..core.training.cache.ParticleCache.fingerprint`),
        the labels, the training and validation positions and the label standardisation."""
        labels = self.labels
        return {"images": self.images.fingerprint(),
                "labels": digest([labels.amplitudes, labels.euler, labels.origin_A, labels.mode_numbers]),
                "train": digest(self.train), "validation": digest(self.val), "scaler": self.scaler.to_dict()}


def split(n, keep=None, val_fraction=0.1, val_count=None, seed=0):
    """Random ``(train, validation)`` positions among the kept ones (sorted)."""
    pool = np.arange(n) if keep is None else np.nonzero(np.asarray(keep, bool))[0]
    order = np.random.default_rng(seed).permutation(pool)
    n_val = int(val_count) if val_count is not None else int(round(val_fraction * len(pool)))
    n_val = min(max(n_val, 0), max(len(pool) - 1, 0))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _net_input(images, channels_last):
    x = images[:, None]
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def evaluate(net, data, positions, device, config):
    """Validation figures on unturned images: loss (standardised L1, summed over targets), per-target
    losses, amplitude mean absolute error (mean over modes), mean angular error (degrees), mean
    absolute shift error (A, mean over x and y)."""
    if len(positions) == 0:
        return {}
    device = torch.device(device)
    use_amp = config.amp and device.type == "cuda"
    cl = config.channels_last and device.type == "cuda"
    was_training = net.training
    net.eval()
    sums, count, ang, amp_err, shift_err = {}, 0, [], [], []
    with torch.inference_mode():
        for batch in data.images.batches(positions, config.eval_batch_size, device, tables=False):
            n = len(batch.indices)
            raw = data.label_tensors(batch.indices, device)
            with autocast(use_amp):
                out = net(_net_input(batch.images, cl))
            out = {k: v.float() for k, v in out.items()}
            losses = target_loss(out, data.scaler.encode(raw["amplitudes"], raw["quaternion"], raw["origin_A"]))
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v) * n
            count += n
            dec = data.scaler.decode(out)
            if "quaternion" in dec:
                ang.append(angular_distance(quaternion_to_matrix(dec["quaternion"].double()),
                                            quaternion_to_matrix(raw["quaternion"].double())).cpu())
            if "amplitudes" in dec:
                amp_err.append((dec["amplitudes"] - raw["amplitudes"]).abs().cpu())
            if "origin_A" in dec:
                shift_err.append((dec["origin_A"] - raw["origin_A"]).abs().cpu())
    net.train(was_training)
    res = {"val_" + k: v / count for k, v in sums.items()}
    res["val_loss"] = sum(res.values())
    if amp_err and amp_err[0].shape[1]:
        res["val_amplitude_mae"] = float(torch.cat(amp_err).mean())
    if ang:
        res["val_angle_deg"] = float(torch.cat(ang).mean())
    if shift_err:
        res["val_shift_A"] = float(torch.cat(shift_err).mean())
    return res


def make_optimizer(net, config, device):
    """Adam (weight decay as L2, the paper's) of :func:`..core.training.steps.make_adam`: on CUDA fused,
    capturable, the learning rate in a device tensor, so that the step can be replayed as a CUDA graph."""
    return make_adam(net.parameters(), config.lr, config.weight_decay, device)


class TrainStep(GraphStep):
    """One DeepHEMNMA optimisation step (forward, L1 losses, backward, Adam) on prepared images
    ``(B, D, D)`` and standardised targets; returns the per-target losses (device tensors, valid until
    the next call).  With ``graph`` (CUDA, one process) replayed as a CUDA graph
    (:class:`..core.training.steps.GraphStep`)."""

    def __init__(self, model, opt, use_amp=False, channels_last=False, graph=False):
        self.model, self.opt, self.use_amp, self.cl = model, opt, use_amp, channels_last
        super().__init__(self._losses, [opt], graph)

    def _losses(self, images, targets):
        with autocast(self.use_amp):
            out = self.model(_net_input(images, self.cl))
        return target_loss(out, targets)


def training_fingerprint(data, net, config, world=1):
    """The checkpoint fingerprint of a run: the data (:meth:`TrainingData.fingerprint`), the network's
    configuration, every setting of ``config`` but :data:`SPEED_SETTINGS`, and the number of processes
    (each draws its own dropout masks and augmentation angles)."""
    settings = {k: v for k, v in asdict(config).items() if k not in SPEED_SETTINGS}
    return Fingerprint(inputs=data.fingerprint(), network=getattr(net, "config", None),
                       training={**settings, "processes": world})


def train(data, net, config, device="cpu", checkpoint=None, curves=None, rank=0, world=1, stop_after=None,
          on_mismatch="error"):
    """Train ``net`` on ``data``; returns ``(net with the best validation weights, eval mode; history)``.

    ``checkpoint``: path written after epochs (see module docstring) and resumed from when it was
    written for the same data, network and settings (:func:`training_fingerprint`); one written for
    others is, by ``on_mismatch``, an error (``'error'``, a ``ValueError`` naming what differs) or
    moved aside as ``checkpoint.stale`` and training starts from scratch (``'restart'``).
    ``curves``: path prefix of the curves (``.csv``, ``.json``).  ``rank``/``world``: this process in
    a :func:`run_distributed` group.  ``stop_after``: leave after that many epochs of this call (tests
    and interruptions; the run resumes from the checkpoint).
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    use_amp, cl = config.amp and cuda, config.channels_last and cuda
    if cuda:
        torch.backends.cudnn.benchmark = True
    net = net.to(device)
    if cl:
        net = net.to(memory_format=torch.channels_last)
    model = ddp.wrap_ddp(net, device, world)
    opt = make_optimizer(net, config, device)
    n_train = len(data.train) if config.samples_per_epoch is None else min(config.samples_per_epoch, len(data.train))
    batch = max(min(config.batch_size, n_train), world)
    steps = max(1, n_train // batch)  # whole global batches only: every rank takes the same number of steps
    warmup = max(1, int(round(config.warmup_epochs * steps)))
    state = {"history": [], "best_loss": float("inf"), "best_epoch": None}
    best_state = None
    fingerprint = training_fingerprint(data, net, config, world)
    saved = load_checkpoint(checkpoint, fingerprint, device, on_mismatch, lead=rank == 0) if checkpoint else None
    if saved is not None:
        net.load_state_dict(saved["net"])
        load_optimizer_state(opt, saved["optimizer"])
        state = saved["state"]
        best_state = saved.get("best_state")
        if rank == 0:
            log("resumed from %s after epoch %d" % (checkpoint, state["epoch"]))
    plan = EpochPlan(config.epochs, config.time_limit, state)
    monitor = data.val if len(data.val) else data.train[: min(len(data.train), 2048)]
    last_saved = time.time()
    epochs_this_call = 0
    gen = torch.Generator(device=device)
    step = TrainStep(model, opt, use_amp, cl, graph=cuda and world == 1 and config.cuda_graph)
    while plan.unfinished():
        epoch = plan.epoch
        plan.begin_epoch()
        rng = np.random.default_rng([config.seed, epoch])
        torch.manual_seed(config.seed * 100003 + epoch * 101 + rank)  # dropout masks
        gen.manual_seed(config.seed * 7919 + epoch * 31 + rank)       # augmentation angles
        # the epoch's order on the device once: no host-device copy (and wait) per step
        order = torch.as_tensor(rng.permutation(data.train)[:n_train], device=device)
        if config.augment:  # the epoch's turns, and their label factors, at once
            alpha = torch.rand(len(order), generator=gen, device=device) * 360.0
            turn_q, turn_r = turn_factors(alpha)
        total_steps = plan.total * steps
        model.train()
        sums = {}
        chunks = [order[s * batch:(s + 1) * batch][rank::world] for s in range(steps)]
        for s, prepared in enumerate(data.images.batches_of(chunks, device, tables=False)):
            lr = lr_at(epoch * steps + s, total_steps, warmup, config.lr, config.final_lr_fraction)
            set_lr(opt, lr)
            sel = slice(s * batch, (s + 1) * batch)
            images = prepared.images
            raw = data.label_tensors(prepared.indices, device)
            q, origin = raw["quaternion"], raw["origin_A"]
            if config.augment:
                images = rotate_images_exact(images, alpha[sel][rank::world])
                q, origin = apply_turn(q, origin, turn_q[sel][rank::world], turn_r[sel][rank::world])
            losses = step(images, data.scaler.encode(raw["amplitudes"], q, origin))
            for k, v in losses.items():  # summed on the device: no host sync per step
                sums[k] = sums.get(k, 0.0) + v
        train_losses = {"train_" + k: float(v) / steps for k, v in sums.items()}
        record = {"epoch": epoch + 1, "lr": lr, "train_loss": sum(train_losses.values()), **train_losses,
                  "samples": steps * batch}
        if rank == 0:
            record.update(evaluate(net, data, monitor, device, config))
        last = plan.end_epoch(lead=rank == 0, sync=lambda values: ddp.broadcast_floats(values, world, device))
        record["seconds"] = state["elapsed"]
        if rank == 0:
            state["history"].append(record)
            if record.get("val_loss", float("inf")) < state["best_loss"]:
                state["best_loss"], state["best_epoch"] = record["val_loss"], epoch + 1
                best_state = module_state(net)
            log("epoch %d/%d: lr %.2e, train loss %.4f, validation loss %.4f (amplitudes %.3g, angles %.2f deg, "
                "shifts %.3f A), %.1f s" % (epoch + 1, plan.total, lr, record["train_loss"],
                                            record.get("val_loss", float("nan")),
                                            record.get("val_amplitude_mae", float("nan")),
                                            record.get("val_angle_deg", float("nan")),
                                            record.get("val_shift_A", float("nan")), state["elapsed"]))
        epochs_this_call += 1
        leaving = last or (stop_after is not None and epochs_this_call >= stop_after)
        if rank == 0:
            if checkpoint and (leaving or time.time() - last_saved >= config.checkpoint_seconds):
                save_checkpoint(checkpoint, {"net": net, "optimizer": opt, "state": state, "best_state": best_state,
                                             "config": asdict(config), "net_config": getattr(net, "config", None)},
                                fingerprint)
                last_saved = time.time()
            save_curves(curves, state["history"], CURVE_KEYS)
        if leaving:
            break
    ddp.barrier(world)
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    net.best_epoch = state.get("best_epoch")
    return net, list(state["history"])


@dataclass
class TrainingJob:
    """Everything a training process needs, picklable (one process per GPU re-reads the images).

    ``images``: a particle file path (read with :func:`..core.io.particles.read_particles`) or a raw
    image array; ``labels``: :class:`.labels.Labels` aligned with the images.  ``on_mismatch``: what
    a checkpoint written for other data or settings does (:func:`train`; ``'restart'``: moved aside,
    training starts from scratch).
    """
    images: object
    labels: object
    train: np.ndarray
    val: np.ndarray
    size: int
    net_config: dict
    config: TrainConfig
    scaler: dict = None
    data_root: str = None
    apix: float = None
    cache: str = "auto"
    checkpoint: str = None
    curves: str = None
    stop_after: int = None
    extra: dict = field(default_factory=dict)
    on_mismatch: str = "restart"


def job_data(job, device):
    """The :class:`TrainingData` of ``job`` (images read, prepared and cached as ``job.cache`` says)."""
    from .data import ParticleImages
    if isinstance(job.images, str):
        from ..core.io.particles import read_particles
        table = read_particles(job.images, apix=job.apix, data_root=job.data_root)
        images = ParticleImages(table, job.size, job.data_root)
    else:
        images = ParticleImages(job.images, job.size)
    images.load(device, job.cache)
    scaler = LabelScaler.from_dict(job.scaler) if job.scaler else None
    return TrainingData(images, job.labels, job.train, job.val, scaler)


def run_job(job, device="cpu", rank=0, world=1):
    """Build the data and the network of ``job`` and train; returns ``(net, history, data)``."""
    data = job_data(job, device)
    torch.manual_seed(job.config.seed)  # the same initial weights on every rank and on resume
    net = build_network(job.net_config)
    net, history = train(data, net, job.config, device, job.checkpoint, job.curves, rank, world, job.stop_after,
                         job.on_mismatch)
    return net, history, data


def run_distributed(job, world, device_type="cuda"):
    """Train ``job`` with ``world`` processes (GPUs 0..world-1 of the visible ones, or CPU with gloo:
    :func:`..core.training.ddp.run_distributed`).

    Rank 0 writes the checkpoint (``job.checkpoint`` is required) and curves; the trained network
    (best validation weights) and history are read back from the checkpoint.
    """
    if not job.checkpoint:
        raise ValueError("distributed training needs a checkpoint path")
    ddp.run_distributed(run_job, job, world, device_type)
    saved = torch.load(job.checkpoint, map_location="cpu", weights_only=True)
    net = build_network(job.net_config)
    net.load_state_dict(saved["best_state"] or saved["net"])
    net.eval()
    net.best_epoch = saved["state"].get("best_epoch")
    return net, saved["state"]["history"]
