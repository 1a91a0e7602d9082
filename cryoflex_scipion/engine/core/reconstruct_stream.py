"""Reconstruction of (a subset of) a particle table, streamed from disk in batches."""
import numpy as np
import torch

from .runtime import run_batches
from .fourier import fourier_resize
from .io.stack import ImageSource
from .reconstruction import Backprojector

__all__ = ["assign_halves", "reconstruct_table"]

CTF_MODES = ("full", "phase-flipped", "none")


def assign_halves(table, mode="auto", seed=0):
    """Half-set of every particle: rlnRandomSubset when present (auto), alternating, or random."""
    n = len(table)
    if mode == "auto" and "rlnRandomSubset" in table.extra:
        subset = np.asarray(table.extra["rlnRandomSubset"]).astype(float).astype(np.int64)
        if set(np.unique(subset)) <= {1, 2}:
            return subset - 1
    if mode == "alternate":
        return np.arange(n) % 2
    halves = np.zeros(n, dtype=np.int64)
    halves[np.random.default_rng(seed).permutation(n)[: n // 2]] = 1
    return halves


def reconstruct_table(table, positions=None, size=None, ctf_mode="full", pad=2.0, wiener="fsc", device="cpu",
                      batch_size=256, halves=None, data_root=None, progress=None, source=None):
    """Reconstruct the particles at ``positions`` (default: all) of a table with poses.

    ``size``: reconstruction box (Fourier-cropped particles); ``ctf_mode``: full, phase-flipped
    (|CTF| weights) or none.  Returns the :meth:`Backprojector.reconstruct` dict plus ``apix``,
    ``size`` and the batch size finally used.
    """
    if ctf_mode not in CTF_MODES:
        raise ValueError("ctf_mode must be one of %s" % (CTF_MODES,))
    box, apix = table.uniform()
    size = size or box
    work_apix = apix * box / size
    device = torch.device(device)
    positions = np.arange(len(table)) if positions is None else np.asarray(positions)
    halves = assign_halves(table) if halves is None else np.asarray(halves)
    use_ctf = ctf_mode != "none" and table.has_ctf
    bp = Backprojector(size, work_apix, pad=pad, device=device)
    own_source = source is None
    source = source or ImageSource(table, data_root)

    def work(start, stop):
        pos = positions[start:stop]
        images = torch.as_tensor(source.read(pos), device=device)
        if size != box:
            images = fourier_resize(images, size)
        bp.insert(images, torch.as_tensor(table.rotations(pos)), torch.as_tensor(table.shifts_px(pos) * size / box),
                  table.ctf.subset(pos) if use_ctf else None, halves=halves[pos],
                  ctf_absolute=ctf_mode == "phase-flipped")
        if progress is not None:
            progress.update(len(pos))

    used = run_batches(len(positions), batch_size, work, device, "reconstruct")
    if own_source:
        source.close()
    result = bp.reconstruct(wiener=wiener)
    result.update({"apix": work_apix, "size": size, "batch_size": used, "ctf": use_ctf})
    return result
