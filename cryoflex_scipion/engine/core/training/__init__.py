"""The machinery shared by the engine's trainers (DeepHEMNMA; auto-decoders such as 3DFlex and
encoders such as cryoSPHERE are meant to sit on it too): pure numpy/torch.

Modules:
- :mod:`.cache`: particle images Fourier-cropped to a working size and normalised (per image, or
  one global scale), kept on the GPU, in pinned host memory or streamed from disk with the next
  batch read ahead; batches ``(indices, images, poses, ctf)`` on the device;
- :mod:`.checkpoint`: atomic checkpoints of any state, resumed only when the fingerprint of inputs
  and settings (:mod:`..fingerprint`) is the run's;
- :mod:`.schedule`: warmup + cosine learning rate, and the number of epochs fitted to a time limit;
- :mod:`.steps`: bfloat16 autocast, Adam with its learning rate in a device tensor, an optimisation
  step replayed as a CUDA graph (eager fallback);
- :mod:`.ddp`: several processes (one per GPU, or gloo on a CPU), gradients averaged by
  DistributedDataParallel, the lead process's decisions broadcast;
- :mod:`.curves`: training curves as CSV and JSON.

A trainer's loop, in outline::

    cache = ParticleCache(table, size, normaliser=GlobalNormaliser())
    cache.load(device)
    fingerprint = Fingerprint(inputs=cache.fingerprint(), network=net_config, training=settings)
    saved = load_checkpoint(path, fingerprint, device)          # None: start from scratch
    plan = EpochPlan(epochs, time_limit, state)
    while plan.unfinished():
        plan.begin_epoch()
        for batch in cache.batches_of(chunks, device):          # batch.indices, .images, .poses, .ctf
            set_lr(opt, lr_at(step, plan.total * steps, warmup, peak_lr))
            losses = train_step(batch.images, ...)
        last = plan.end_epoch(lead=rank == 0, sync=lambda v: broadcast_floats(v, world, device))
        save_checkpoint(path, {...}, fingerprint); save_curves(prefix, history, keys)
"""
from .cache import (Batch, CTFBatch, GlobalNormaliser, ParticleCache, PerImageNormaliser, Poses, normaliser_from_dict,
                    working_geometry)
from ..fingerprint import Fingerprint, digest
from .checkpoint import CheckpointMismatch, load_checkpoint, module_state, restore_rng_state, rng_state, save_checkpoint
from .curves import save_curves
from .ddp import barrier, broadcast_floats, run_distributed, wrap_ddp
from .schedule import EpochPlan, lr_at
from .steps import GraphStep, autocast, load_optimizer_state, make_adam, set_lr

__all__ = ["Batch", "CTFBatch", "GlobalNormaliser", "ParticleCache", "PerImageNormaliser", "Poses",
           "normaliser_from_dict", "working_geometry", "CheckpointMismatch", "Fingerprint", "digest",
           "load_checkpoint", "module_state", "restore_rng_state", "rng_state", "save_checkpoint", "save_curves",
           "barrier", "broadcast_floats", "run_distributed", "wrap_ddp", "EpochPlan", "lr_at", "GraphStep",
           "autocast", "load_optimizer_state", "make_adam", "set_lr"]
