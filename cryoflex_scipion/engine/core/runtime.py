"""Run-time services of the engine's library code: logging, progress lines with rates, batches that
shrink on CUDA out-of-memory, devices, host memory, JSON summaries.

Library modules use these; :mod:`..cli` only adds argparse glue (common options, ``fail``) on top,
so nothing in the library imports the command line.
"""
import json
import math
import os
import time

import numpy as np
import torch

from .errors import EngineInputError  # re-exported: library code raises it from here

__all__ = ["EngineInputError", "log", "Progress", "run_batches", "host_memory_gb", "host_memory_available",
           "select_device", "device_name", "gpu_ids", "write_summary"]


def log(msg):
    print(msg, flush=True)


def host_memory_gb():
    """(current, peak) resident memory of this process in GB (Linux; zeros elsewhere)."""
    try:
        with open("/proc/self/status") as fh:
            status = fh.read()
        rss = int(status.split("VmRSS:")[1].split()[0]) / 1024.0 ** 2
        hwm = int(status.split("VmHWM:")[1].split()[0]) / 1024.0 ** 2
        return rss, hwm
    except (OSError, IndexError, ValueError):
        return 0.0, 0.0


def host_memory_available():
    """Bytes of memory available to this host (Linux ``MemAvailable``; 4 GB when unknown)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


class Progress:
    """Progress lines with rate and time left, at most every ``every`` seconds
    (default: ``CRYOFLEX_PROGRESS_SECONDS`` or 10)."""

    def __init__(self, total, label, unit="particles", every=None):
        every = float(os.environ.get("CRYOFLEX_PROGRESS_SECONDS", 10.0)) if every is None else every
        self.total, self.label, self.unit, self.every = total, label, unit, every
        self.done = 0
        self.start = self._last = time.time()

    def update(self, n):
        self.done += n
        now = time.time()
        if now - self._last >= self.every or self.done >= self.total:
            self._last = now
            log(self.line())

    def rate(self):
        elapsed = max(time.time() - self.start, 1e-9)
        return self.done / elapsed

    def line(self):
        rate = self.rate()
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        rss, _ = host_memory_gb()
        return "%s: %d/%d %s (%.0f%%), %.1f %s/s, %s left, host memory %.2f GB" % (
            self.label, self.done, self.total, self.unit, 100.0 * self.done / max(self.total, 1),
            rate, self.unit, "%.0f s" % left if math.isfinite(left) else "?", rss)

    def elapsed(self):
        return time.time() - self.start


def run_batches(n_items, batch_size, work, device, label="batches"):
    """Call ``work(start, stop)`` over ``range(n_items)`` in batches.

    On CUDA out-of-memory the batch size is halved and the same range retried,
    so a too-large batch size degrades speed, not the run.  Returns the batch
    size finally used.
    """
    if batch_size < 1:
        raise EngineInputError("the batch size must be at least 1 (got %d)" % batch_size)
    start = 0
    while start < n_items:
        stop = min(start + batch_size, n_items)
        try:
            work(start, stop)
        except torch.cuda.OutOfMemoryError:
            if batch_size == 1:
                raise
            torch.cuda.empty_cache()
            batch_size = max(1, batch_size // 2)
            log("%s: GPU out of memory, batch size reduced to %d" % (label, batch_size))
            continue
        start = stop
    return batch_size


def select_device(name, threads=0):
    """``torch.device`` for ``name`` in ``auto|cpu|cuda``; ``cuda`` without a visible GPU raises
    :class:`EngineInputError`."""
    if threads and threads > 0:
        torch.set_num_threads(threads)
    if name == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        # cuFFT keeps a plan (with host memory) per distinct batch shape; batches that shrink as
        # particles converge would otherwise fill a 4096-plan cache, gigabytes of host memory.
        torch.backends.cuda.cufft_plan_cache.max_size = 32
        return torch.device("cuda")
    if name == "cuda":
        raise EngineInputError("--device cuda was requested but torch sees no GPU (CUDA_VISIBLE_DEVICES=%r, "
                               "torch %s)" % (os.environ.get("CUDA_VISIBLE_DEVICES"), torch.__version__))
    return torch.device("cpu")


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu (%d threads)" % torch.get_num_threads()


def gpu_ids(spec):
    """Physical GPU ids for the workers.  Ids are positions among the visible GPUs, so that under
    CUDA_VISIBLE_DEVICES=2,3 (set by Scipion or a queue) 'all' or '0,1' mean GPUs 2 and 3."""
    if not spec:
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    visible = [v.strip() for v in visible.split(",") if v.strip()] if visible else \
        [str(i) for i in range(torch.cuda.device_count())]
    if spec.strip() == "all":
        return visible
    picked = []
    for token in spec.replace(" ", ",").split(","):
        if token:
            try:
                i = int(token)
            except ValueError:
                raise EngineInputError("--gpus takes GPU positions such as '0,1' or 'all', not %r" % spec) from None
            if i < 0 or i >= len(visible):
                raise EngineInputError("--gpus asks for GPU %d but %d are visible" % (i, len(visible)))
            picked.append(visible[i])
    return picked


def _jsonable(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().tolist()
    raise TypeError("not JSON serialisable: %r" % type(x))


def write_summary(path, data):
    """Write a command's JSON summary atomically (read back by the Scipion protocols)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=2, default=_jsonable)
    os.replace(tmp, path)  # never leave a half-written summary behind

