"""Reconstruction of (a subset of) a particle table, streamed from disk in batches, and its files."""
import os

import numpy as np
import torch

from .fourier import fourier_resize
from .io.mrc import write_map
from .io.stack import ImageSource
from .metrics import fsc, fsc_frequencies, resolution_at
from .outputs import Reconstruct
from .reconstruction import Backprojector
from .runtime import run_batches

__all__ = ["assign_halves", "reconstruct_table", "write_reconstruction"]

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


def write_reconstruction(out, result, origin=None, reference=None):
    """Write a :func:`reconstruct_table` result into the folder ``out`` (names in
    :class:`.outputs.Reconstruct`): the FSC-weighted map, the two half-maps and ``fsc.csv``
    (frequency, half-map FSC, and the FSC against ``reference`` (a map array of the same box or
    larger, Fourier-cropped) when given).  ``origin``: x, y, z in A of voxel 0 (default: the box
    centred on 0).  Returns the resolutions (A) as a dict."""
    size, apix = result["size"], result["apix"]
    origin = tuple(origin) if origin is not None else (-(size // 2) * apix,) * 3
    os.makedirs(out, exist_ok=True)
    write_map(os.path.join(out, Reconstruct.MAP), result["full_map"].cpu().numpy(), apix, origin)
    for name, half in zip(Reconstruct.HALF_MAPS, result["half_maps"]):
        write_map(os.path.join(out, name), half.cpu().numpy(), apix, origin)
    curve = result["fsc"]
    columns, header = [fsc_frequencies(size, apix), curve], "frequency_1_per_A,fsc_half_maps"
    facts = {"resolution_0.143_A": resolution_at(curve, size, apix, 0.143),
             "resolution_0.5_A": resolution_at(curve, size, apix, 0.5)}
    if reference is not None:
        ref = np.asarray(reference)
        if ref.shape[0] != size:
            ref = fourier_resize(torch.as_tensor(ref, dtype=torch.float64), size, ndim=3).numpy()
        ref_curve = fsc(result["full_map"].cpu(), torch.as_tensor(np.array(ref)))
        columns.append(ref_curve)
        header += ",fsc_reference"
        facts["reference_resolution_0.5_A"] = resolution_at(ref_curve, size, apix, 0.5)
        facts["reference_resolution_0.143_A"] = resolution_at(ref_curve, size, apix, 0.143)
        facts["reference_resolution_0.5_px"] = facts["reference_resolution_0.5_A"] / apix
    np.savetxt(os.path.join(out, Reconstruct.FSC), np.stack(columns, -1), delimiter=",", header=header,
               comments="", fmt="%.6g")
    return facts
