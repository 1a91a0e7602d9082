"""Several training processes on one host (``torch.distributed``): one per GPU, or several on a CPU.

:func:`run_distributed` starts ``world`` processes with ``torch.multiprocessing.spawn``; they meet
through a file rendezvous (no port to choose or to find free) and form a group with NCCL on GPUs
or gloo on CPUs; each calls ``run(job, device, rank, world)`` with a picklable ``job`` (every
process re-reads its inputs: nothing large crosses the process boundary) and a module-level
``run``.  On a CPU the cores are divided among the processes.  The trainer wraps its network
(:func:`wrap_ddp`: DistributedDataParallel averages the gradients), lets the lead process (rank 0)
validate and write checkpoints, and shares the lead's decisions (:func:`broadcast_floats`).
"""
import os
import tempfile

import torch

__all__ = ["run_distributed", "broadcast_floats", "wrap_ddp", "barrier"]


def broadcast_floats(values, world, device):
    """Rank 0's list of floats, on every rank (the list itself when ``world`` is 1)."""
    if world == 1:
        return values
    import torch.distributed as dist
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(t, 0)
    return t.tolist()


def wrap_ddp(module, device, world):
    """``module`` in DistributedDataParallel when ``world`` > 1, else itself."""
    if world == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel
    device = torch.device(device)
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def barrier(world):
    if world > 1:
        import torch.distributed as dist
        dist.barrier()


def _worker(rank, world, backend, init_file, run, job, device_type):
    import torch.distributed as dist
    # NVLink multicast (NVLS) can take a shared host's GPUs out of service: off unless asked for.
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    if device_type == "cuda":
        torch.cuda.set_device(rank)
        device = torch.device("cuda", rank)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(max(1, torch.get_num_threads() // world))  # the processes share the cores
    dist.init_process_group(backend, init_method="file://" + init_file, rank=rank, world_size=world)
    try:
        run(job, device, rank, world)
    finally:
        dist.destroy_process_group()


def run_distributed(run, job, world, device_type="cuda"):
    """Call ``run(job, device, rank, world)`` in ``world`` processes (GPUs 0..world-1 of the visible
    ones, or the CPU with gloo) and wait for them; a process that fails raises here (its traceback
    is printed by ``torch.multiprocessing``).  Results come back through files the run writes."""
    import torch.multiprocessing as mp
    backend = "nccl" if device_type == "cuda" else "gloo"
    handle, init_file = tempfile.mkstemp(prefix="cryoflex-ddp-")
    os.close(handle)
    os.remove(init_file)  # the file rendezvous creates it
    try:
        mp.spawn(_worker, args=(world, backend, init_file, run, job, device_type), nprocs=world, join=True)
    finally:
        if os.path.exists(init_file):
            os.remove(init_file)
