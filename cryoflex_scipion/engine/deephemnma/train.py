"""Training DeepHEMNMA: L1 loss, Adam, warmup + cosine learning rate, checkpoints, several GPUs.

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
  bit on a CPU; cuDNN kernels are not bitwise deterministic).
- Several processes (one per GPU): :func:`run_distributed` starts them (``torch.distributed``,
  NCCL on GPUs, gloo on CPUs); each takes its share of every global batch (the global batch and so
  the hyper-parameters do not depend on the number of GPUs), DistributedDataParallel averages the
  gradients, and rank 0 validates and writes the checkpoint.
"""
import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..core.runtime import log
from ..core.geometry import angular_distance, quaternion_to_matrix
from .augment import apply_turn, rotate_images_exact, turn_factors
from .labels import LabelScaler, target_loss
from .network import build_network
from .predict import autocast

__all__ = ["TrainConfig", "TrainingData", "split", "train", "evaluate", "TrainingJob", "job_data", "run_job",
           "run_distributed", "lr_at", "save_curves", "TrainStep", "make_optimizer", "set_lr"]


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


def split(n, keep=None, val_fraction=0.1, val_count=None, seed=0):
    """Random ``(train, validation)`` positions among the kept ones (sorted)."""
    pool = np.arange(n) if keep is None else np.nonzero(np.asarray(keep, bool))[0]
    order = np.random.default_rng(seed).permutation(pool)
    n_val = int(val_count) if val_count is not None else int(round(val_fraction * len(pool)))
    n_val = min(max(n_val, 0), max(len(pool) - 1, 0))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def lr_at(step, total_steps, warmup_steps, config):
    """Linear warmup to ``lr``, then cosine decay to ``final_lr_fraction * lr`` at ``total_steps``."""
    if step < warmup_steps:
        return config.lr * (step + 1) / warmup_steps
    t = min(1.0, (step - warmup_steps) / max(total_steps - warmup_steps, 1))
    low = config.final_lr_fraction
    return config.lr * (low + (1 - low) * 0.5 * (1 + math.cos(math.pi * t)))


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
        for pos, images in data.images.batches(positions, config.eval_batch_size, device):
            raw = data.label_tensors(pos, device)
            x = images[:, None]
            x = x.contiguous(memory_format=torch.channels_last) if cl else x
            with autocast(use_amp):
                out = net(x)
            out = {k: v.float() for k, v in out.items()}
            losses = target_loss(out, data.scaler.encode(raw["amplitudes"], raw["quaternion"], raw["origin_A"]))
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(pos)
            count += len(pos)
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


_CURVE_KEYS = ["epoch", "lr", "train_loss", "train_amplitudes", "train_quaternion", "train_shifts", "val_loss",
               "val_amplitude_mae", "val_angle_deg", "val_shift_A", "seconds", "samples"]


def save_curves(prefix, history):
    """Training and validation curves as ``prefix.json`` and ``prefix.csv`` (empty cells for absent values)."""
    if not prefix:
        return
    with open(prefix + ".json.tmp", "w") as fh:
        json.dump(history, fh, indent=1)
    os.replace(prefix + ".json.tmp", prefix + ".json")
    with open(prefix + ".csv.tmp", "w") as fh:
        fh.write(",".join(_CURVE_KEYS) + "\n")
        for h in history:
            fh.write(",".join("" if h.get(k) is None else ("%.6g" % h[k] if isinstance(h[k], float) else str(h[k]))
                              for k in _CURVE_KEYS) + "\n")
    os.replace(prefix + ".csv.tmp", prefix + ".csv")


def _broadcast(values, world, device):
    """Rank 0's list of floats, on every rank."""
    if world == 1:
        return values
    import torch.distributed as dist
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(t, 0)
    return t.tolist()


def _clone_state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _to_cpu(state):
    return None if state is None else {k: v.detach().cpu() for k, v in state.items()}


def make_optimizer(net, config, device):
    """Adam (weight decay as L2, the paper's).  On CUDA: fused, with the learning rate held in a device
    tensor and ``capturable`` state, so that the step can be replayed as a CUDA graph."""
    if torch.device(device).type == "cuda":
        return torch.optim.Adam(net.parameters(), lr=torch.tensor(config.lr, device=device),
                                weight_decay=config.weight_decay, fused=True, capturable=True)
    return torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def set_lr(opt, lr):
    for group in opt.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


class TrainStep:
    """One optimisation step (forward, L1 losses, backward, Adam) on prepared images ``(B, D, D)`` and
    standardised targets; returns the per-target losses (device tensors, valid until the next call).

    With ``graph`` (CUDA, one process) the step is captured once as a CUDA graph after three eager
    steps (on a side stream, as capture requires) and then replayed: a ResNet-34 step is a thousand
    small kernels, which Python launches slower than an H200 runs them at a batch of 256.  The inputs
    are copied into static buffers; the learning rate lives in a device tensor (:func:`make_optimizer`).
    """

    def __init__(self, model, opt, use_amp=False, channels_last=False, graph=False):
        self.model, self.opt = model, opt
        self.use_amp, self.cl, self.graph = use_amp, channels_last, graph
        self._eager_steps, self._graph, self._static = 0, None, None

    def _input(self, images):
        x = images[:, None]
        return x.contiguous(memory_format=torch.channels_last) if self.cl else x

    def _forward_backward(self, x, targets, cache=True):
        with autocast(self.use_amp, cache):
            out = self.model(x)
        losses = target_loss(out, targets)
        sum(losses.values()).backward()
        self.opt.step()
        return {k: v.detach() for k, v in losses.items()}

    def _eager(self, images, targets):
        self.opt.zero_grad(set_to_none=True)
        return self._forward_backward(self._input(images), targets)

    def __call__(self, images, targets):
        if not self.graph:
            return self._eager(images, targets)
        if self._graph is None and self._eager_steps < 3:
            self._eager_steps += 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                losses = self._eager(images, targets)
            torch.cuda.current_stream().wait_stream(side)
            return losses
        if self._graph is None:
            try:
                self._capture(images, targets)
            except Exception as exc:  # an unsupported operation: keep training eagerly
                log("CUDA graph capture failed (%s); training without it" % str(exc).splitlines()[0])
                self.graph, self._graph = False, None
                return self._eager(images, targets)
        x, t, losses = self._static
        x.copy_(self._input(images))
        for k, v in targets.items():
            t[k].copy_(v)
        self._graph.replay()
        return losses

    def _capture(self, images, targets):
        x = self._input(images).clone()
        t = {k: v.clone() for k, v in targets.items()}
        self.opt.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            losses = self._forward_backward(x, t, cache=False)
        self._graph, self._static = graph, (x, t, losses)


def train(data, net, config, device="cpu", checkpoint=None, curves=None, rank=0, world=1, stop_after=None):
    """Train ``net`` on ``data``; returns ``(net with the best validation weights, eval mode; history)``.

    ``checkpoint``: path written after epochs (see module docstring) and resumed from when present.
    ``curves``: path prefix of the curves (``.csv``, ``.json``).  ``rank``/``world``: this process in a
    :func:`run_distributed` group.  ``stop_after``: leave after that many epochs of this call (tests
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
    model = net
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel
        model = DistributedDataParallel(net, device_ids=[device.index] if cuda else None)
    opt = make_optimizer(net, config, device)
    n_train = len(data.train) if config.samples_per_epoch is None else min(config.samples_per_epoch, len(data.train))
    batch = max(min(config.batch_size, n_train), world)
    steps = max(1, n_train // batch)  # whole global batches only: every rank takes the same number of steps
    warmup = max(1, int(round(config.warmup_epochs * steps)))
    state = {"epoch": 0, "planned_epochs": None if config.time_limit else config.epochs, "history": [],
             "elapsed": 0.0, "best_loss": float("inf"), "best_epoch": None}
    best_state = None
    if checkpoint and os.path.exists(checkpoint):
        saved = torch.load(checkpoint, map_location=device, weights_only=True)
        if saved.get("net_config") != getattr(net, "config", None):
            raise ValueError("%s was written for another network (%s); remove it or train with the same settings"
                             % (checkpoint, saved.get("net_config")))
        net.load_state_dict(saved["net"])
        lr_tensors = [g["lr"] for g in opt.param_groups]
        opt.load_state_dict(saved["optimizer"])
        for group, lr in zip(opt.param_groups, lr_tensors):  # keep the device tensor (CUDA graphs)
            group["lr"] = lr
        state = saved["state"]
        best_state = saved.get("best_state")
        if rank == 0:
            log("resumed from %s after epoch %d" % (checkpoint, state["epoch"]))
    monitor = data.val if len(data.val) else data.train[: min(len(data.train), 2048)]
    start = time.time() - state["elapsed"]
    last_saved = time.time()
    epochs_this_call = 0
    gen = torch.Generator(device=device)
    step = TrainStep(model, opt, use_amp, cl, graph=cuda and world == 1 and config.cuda_graph)
    while state["epoch"] < (state["planned_epochs"] or config.epochs):
        epoch = state["epoch"]
        t_epoch = time.time()
        rng = np.random.default_rng([config.seed, epoch])
        torch.manual_seed(config.seed * 100003 + epoch * 101 + rank)  # dropout masks
        gen.manual_seed(config.seed * 7919 + epoch * 31 + rank)       # augmentation angles
        # the epoch's order on the device once: no host-device copy (and wait) per step
        order = torch.as_tensor(rng.permutation(data.train)[:n_train], device=device)
        if config.augment:  # the epoch's turns, and their label factors, at once
            alpha = torch.rand(len(order), generator=gen, device=device) * 360.0
            turn_q, turn_r = turn_factors(alpha)
        total_steps = (state["planned_epochs"] or config.epochs) * steps
        model.train()
        sums = {}
        for s in range(steps):
            global_step = epoch * steps + s
            lr = lr_at(global_step, total_steps, warmup, config)
            set_lr(opt, lr)
            sel = slice(s * batch, (s + 1) * batch)
            pos = order[sel][rank::world]
            images = data.images.get(pos, device)
            raw = data.label_tensors(pos, device)
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
        state["epoch"] = epoch + 1
        state["elapsed"] = time.time() - start
        record["seconds"] = state["elapsed"]
        epoch_seconds = time.time() - t_epoch
        plan, stop = state["planned_epochs"] or 0, 0.0
        if rank == 0 and config.time_limit:
            if epoch > 0:  # the first epoch carries start-up costs
                state.setdefault("epoch_seconds", []).append(epoch_seconds)
            if state["epoch"] >= min(2, config.epochs):
                # (re)plan from the mean epoch time, only ever fewer epochs: the schedule ends in time
                left = config.time_limit - state["elapsed"]
                mean = float(np.mean(state.get("epoch_seconds") or [epoch_seconds]))
                fit = min(config.epochs, state["epoch"] + max(0, int(0.97 * left / mean)))
                if state["planned_epochs"] is None:
                    log("time limit %.0f s: %d epochs of %.2f s planned" % (config.time_limit, fit, mean))
                plan = fit if state["planned_epochs"] is None else min(state["planned_epochs"], fit)
            if state["elapsed"] + epoch_seconds > config.time_limit:
                stop = 1.0
        plan, stop = _broadcast([float(plan), stop], world, device)
        if int(plan):
            state["planned_epochs"] = int(plan)
        last = stop > 0 or state["epoch"] >= (state["planned_epochs"] or config.epochs)
        if last:
            state["planned_epochs"] = state["epoch"]
        if rank == 0:
            state["history"].append(record)
            if record.get("val_loss", float("inf")) < state["best_loss"]:
                state["best_loss"], state["best_epoch"] = record["val_loss"], epoch + 1
                best_state = _clone_state(net)
            log("epoch %d/%d: lr %.2e, train loss %.4f, validation loss %.4f (amplitudes %.3g, angles %.2f deg, "
                "shifts %.3f A), %.1f s" % (epoch + 1, state["planned_epochs"] or config.epochs, lr,
                                            record["train_loss"], record.get("val_loss", float("nan")),
                                            record.get("val_amplitude_mae", float("nan")),
                                            record.get("val_angle_deg", float("nan")),
                                            record.get("val_shift_A", float("nan")), state["elapsed"]))
            epochs_this_call += 1
            leaving = last or (stop_after is not None and epochs_this_call >= stop_after)
            if checkpoint and (leaving or time.time() - last_saved >= config.checkpoint_seconds):
                _save_checkpoint(checkpoint, net, opt, state, best_state, config)
                last_saved = time.time()
            save_curves(curves, state["history"])
        else:
            epochs_this_call += 1
        if last:
            break
        if stop_after is not None and epochs_this_call >= stop_after:
            break
    if world > 1:
        import torch.distributed as dist
        dist.barrier()
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    net.best_epoch = state.get("best_epoch")
    return net, list(state["history"])


def _save_checkpoint(path, net, opt, state, best_state, config):
    torch.save({"net": _to_cpu(net.state_dict()), "optimizer": opt.state_dict(), "state": state,
                "best_state": _to_cpu(best_state), "config": asdict(config),
                "net_config": getattr(net, "config", None)}, path + ".tmp")
    os.replace(path + ".tmp", path)


@dataclass
class TrainingJob:
    """Everything a training process needs, picklable (one process per GPU re-reads the images).

    ``images``: a particle file path (read with :func:`..core.io.particles.read_particles`) or a raw
    image array; ``labels``: :class:`.labels.Labels` aligned with the images.
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
    net, history = train(data, net, job.config, device, job.checkpoint, job.curves, rank, world, job.stop_after)
    return net, history, data


def _worker(rank, world, backend, init_file, job, device_type):
    import torch.distributed as dist
    if device_type == "cuda":
        torch.cuda.set_device(rank)
        device = torch.device("cuda", rank)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(max(1, torch.get_num_threads() // world))  # the processes share the cores
    dist.init_process_group(backend, init_method="file://" + init_file, rank=rank, world_size=world)
    try:
        run_job(job, device, rank, world)
    finally:
        dist.destroy_process_group()


def run_distributed(job, world, device_type="cuda"):
    """Train ``job`` with ``world`` processes (GPUs 0..world-1 of the visible ones, or CPU with gloo).

    Rank 0 writes the checkpoint (``job.checkpoint`` is required) and curves; the trained network
    (best validation weights) and history are read back from the checkpoint.
    """
    if not job.checkpoint:
        raise ValueError("distributed training needs a checkpoint path")
    import torch.multiprocessing as mp
    backend = "nccl" if device_type == "cuda" else "gloo"
    handle, init_file = tempfile.mkstemp(prefix="cryoflex-ddp-")
    os.close(handle)
    os.remove(init_file)  # the file rendezvous creates it
    try:
        mp.spawn(_worker, args=(world, backend, init_file, job, device_type), nprocs=world, join=True)
    finally:
        if os.path.exists(init_file):
            os.remove(init_file)
    saved = torch.load(job.checkpoint, map_location="cpu", weights_only=True)
    net = build_network(job.net_config)
    net.load_state_dict(saved["best_state"] or saved["net"])
    net.eval()
    net.best_epoch = saved["state"].get("best_epoch")
    return net, saved["state"]["history"]
