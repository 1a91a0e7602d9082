"""The whole elastic alignment of a particle set, as the command line, the protocol and the benchmarks run it.

1. :func:`load_inputs` reads and checks the particles, the reference and its modes (raises
   :class:`..core.runtime.EngineInputError` with a readable message before any heavy work);
2. :func:`prepare_job` fixes the job's fingerprint in the output folder: finished batches of another
   job (other particles, modes or settings) are never reused;
3. :func:`align_batches` aligns the batches of one worker (``worker, worker + n_workers, ...``) that
   have no result file yet, each saved atomically as soon as it is done (resume);
4. :func:`merge_results` gathers the batches into the STAR, ``results.npz`` and the outlier flags.

File names are in :mod:`.outputs`.
"""
import glob
import json
import os
import shutil
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

from ..core.atoms import read_atoms
from ..core.fingerprint import Fingerprint
from ..core.io.mrc import MRCError
from ..core.io.particles import read_particles
from ..core.io.stack import ImageSource
from ..core.io.star import StarError
from ..core.metrics import mahalanobis
from ..core.runtime import EngineInputError, Progress, device_name, host_memory_gb, log, run_batches
from ..core.validate import check_particles, load_array, select_modes
from . import outputs
from .model import CTF_FLIPPED, CTF_FULL, CTF_NONE
from .quality import poor_fit
from .references import MultiReferenceAligner, reference_path

__all__ = ["HemnmaInputs", "parse_mode_numbers", "load_inputs", "residue_groups", "prepare_job", "align_batches",
           "merge_results"]

CTF_MODES = ("auto", CTF_FULL, CTF_FLIPPED, CTF_NONE)
JOB_FILE = "job.json"  # the fingerprint of the job whose batches are in the output folder


@dataclass
class HemnmaInputs:
    table: object          # ParticleTable
    box: int
    apix: float
    model: object          # AtomModel of the reference
    modes: np.ndarray      # (M, atoms, 3) of the selected modes
    numbers: list          # their 1-based mode numbers
    ctf_mode: str
    path: np.ndarray = None  # (K, atoms, 3) conformations aligned against (the reference first); None: the reference


def parse_mode_numbers(text, total):
    """1-based mode numbers from ``'7-9, 12'`` (``None``/empty: all ``total`` modes of the file); see
    :func:`..core.validate.select_modes` for what is refused."""
    index = select_modes(text, total, "--mode-list")
    return list(range(1, total + 1)) if index is None else [i + 1 for i in index]


def load_inputs(particles, atoms, modes_path, mode_list=None, selection="all", apix=None, data_root=None,
                ctf_mode="auto", need_poses=False, amplitude_contrast=None, other_references=(), intermediates=1):
    """Read and check everything the alignment needs -> :class:`HemnmaInputs`.  ``other_references``: files
    of other conformations of the same atoms (see :mod:`.references`), with ``intermediates`` linear
    interpolations between consecutive conformations."""
    try:
        table = read_particles(particles, apix=apix, check_files=True, data_root=data_root,
                               amplitude_contrast=amplitude_contrast)
        box, apix = table.uniform()
        model = read_atoms(atoms, selection)
    except (StarError, FileNotFoundError, MRCError, ValueError, ImportError) as exc:
        raise EngineInputError(str(exc)) from None
    if len(table) == 0:
        raise EngineInputError("%s holds no particles" % particles)
    modes = load_array(modes_path, "modes")
    if modes.ndim != 3 or modes.shape[2] != 3:
        raise EngineInputError("%s: modes must be an array (modes, atoms, 3), got %s" % (modes_path, modes.shape))
    if modes.shape[1] != len(model):
        raise EngineInputError("the modes have %d atoms but the reference %s has %d (selection %r)"
                               % (modes.shape[1], atoms, len(model), selection))
    numbers = parse_mode_numbers(mode_list, len(modes))
    selected = modes[np.array(numbers) - 1]
    if not np.all(np.isfinite(selected)):
        raise EngineInputError("%s: the selected modes contain NaN or infinite values" % modes_path)
    ctf_mode = CTF_FULL if ctf_mode == "auto" else ctf_mode
    if ctf_mode != CTF_NONE and not table.has_ctf:
        raise EngineInputError("%s has no CTF parameters: give --ctf-mode none for CTF-free or CTF-corrected images"
                               % particles)
    if need_poses and not table.has_pose:
        raise EngineInputError("%s has no angles: --local and --use-input-poses need existing poses" % particles)
    check_particles(table, particles, need_poses=need_poses, use_ctf=ctf_mode != CTF_NONE)
    others = [_other_reference(path, selection, model) for path in other_references or ()]
    path = reference_path(model.coords, others, intermediates)
    radius = np.sqrt(((path - model.center()) ** 2).sum(2)).max()
    if radius > 0.5 * box * apix:
        raise EngineInputError("the reference%s reaches %.0f A from its centre but the particle box is %.0f A wide: "
                               "pixel size or box inconsistent with the reference"
                               % (" path" if others else "", radius, box * apix))
    return HemnmaInputs(table, box, apix, model, selected, numbers, ctf_mode, path)


def _other_reference(path, selection, model):
    """Coordinates of another conformation of ``model``'s atoms, in the reference's atom order: the same atoms
    in the same order, or else matched by (chain, residue number, atom name) when every reference atom has
    exactly one match (another file of the same molecule, with other atoms such as hydrogens or extra
    residues)."""
    try:
        other = read_atoms(path, selection)
    except (FileNotFoundError, ValueError, ImportError) as exc:
        raise EngineInputError("other reference %s: %s" % (path, exc)) from None
    ref_keys, other_keys = _atom_keys(model), _atom_keys(other)
    if len(other) == len(model) and np.array_equal(ref_keys, other_keys):
        coords = other.coords
    else:
        unique, counts = np.unique(other_keys, return_counts=True)
        lookup = {k: i for i, k in enumerate(other_keys)}
        missing = [k for k in ref_keys if k not in lookup]
        repeated = set(unique[counts > 1]) & set(ref_keys)
        if missing or repeated or len(np.unique(ref_keys)) != len(ref_keys):
            raise EngineInputError(
                "other reference %s has %d atoms but the reference has %d (selection %r), and they cannot be "
                "matched by chain, residue and atom name (%s): give conformations of the same atoms"
                % (path, len(other), len(model), selection,
                   "%d reference atoms missing, e.g. %s" % (len(missing), missing[0]) if missing else
                   "atoms named twice"))
        coords = other.coords[[lookup[k] for k in ref_keys]]
    if not np.all(np.isfinite(coords)):
        raise EngineInputError("other reference %s has NaN or infinite coordinates" % path)
    return coords


def _residue_keys(model):
    """``chain:residue`` per atom."""
    return np.char.add(np.char.add(np.asarray(model.chains).astype(str), ":"), np.asarray(model.resids).astype(str))


def _atom_keys(model):
    """``chain:residue:name`` per atom."""
    return np.char.add(np.char.add(_residue_keys(model), ":"), np.char.strip(np.asarray(model.names).astype(str)))


def residue_groups(model):
    """Bead index per atom, one bead per (chain, residue); None when that would not reduce the
    model at least twofold (C-alpha or pseudoatomic references)."""
    _, groups = np.unique(_residue_keys(model), return_inverse=True)
    return groups if groups.max() + 1 <= len(model) // 2 else None


def fingerprint(inputs, settings, batch_size, sigma, seed, local, use_input_poses, data_root=None):
    """:class:`..core.fingerprint.Fingerprint` of what decides a batch's result: the images (files,
    positions, pixel size), the input poses and CTF, the reference and its selected modes, and every
    alignment setting.  The batch size is in it because it decides which particles form batch ``k``."""
    t = inputs.table
    return Fingerprint(
        images=np.char.add(np.asarray(t.image_file).astype(str), np.char.add("@", np.asarray(t.image_index).astype(str))),
        stacks=sorted((os.path.realpath(p), os.path.getsize(p), int(os.path.getmtime(p)))
                      for p in t.resolved_files(data_root).values() if os.path.exists(p)),
        box_apix=[int(inputs.box), float(inputs.apix)],
        poses=np.concatenate([t.euler, t.origin_A], 1) if t.has_pose else None,
        ctf=np.stack([np.broadcast_to(np.asarray(getattr(t.ctf, f.name), np.float64), (len(t),))
                      for f in fields(t.ctf)]) if t.has_ctf else None,
        reference=[inputs.model.coords, inputs.model.weights], modes=inputs.modes, mode_numbers=list(inputs.numbers),
        path=inputs.path,
        settings={k: v for k, v in asdict(settings).items() if k != "coarse_groups"},
        coarse_groups=settings.coarse_groups, batch_size=int(batch_size), sigma=float(sigma), seed=int(seed),
        local=bool(local), use_input_poses=bool(use_input_poses))


def prepare_job(out, job, overwrite=False):
    """Keep the finished batches in ``out`` only if they belong to this job (the same :func:`fingerprint`
    ``job``).  Results of another job are refused (:class:`EngineInputError` naming what differs) unless
    ``overwrite``, which removes them and records this job.  Returns the indices of the batches kept."""
    batches = os.path.join(out, outputs.BATCHES)
    job_path = os.path.join(out, JOB_FILE)
    previous = None
    if os.path.exists(job_path):
        try:
            with open(job_path) as fh:
                previous = json.load(fh).get("fingerprint")
        except (OSError, ValueError, AttributeError):
            previous = None
    existing = sorted(glob.glob(os.path.join(batches, "batch_*.npz")))
    if previous is not None and not job.differences(previous):
        return [int(os.path.basename(p)[6:-4]) for p in existing]
    results = [name for name in (outputs.STAR, outputs.RESULTS, outputs.SUMMARY)
               if os.path.exists(os.path.join(out, name))]
    if existing or results:
        changed = ", ".join(job.differences(previous)) if previous is not None else "unknown, no job record"
        if not overwrite:
            raise EngineInputError("%s holds the results of another alignment (it differs in: %s); give "
                                   "--overwrite to replace them, or another output folder" % (out, changed))
        log("%s held the results of another alignment (it differs in: %s): aligning from scratch" % (out, changed))
        if os.path.isdir(batches):
            shutil.rmtree(batches)
        for name in results:
            os.remove(os.path.join(out, name))
    os.makedirs(batches, exist_ok=True)
    with open(job_path + ".tmp", "w") as fh:
        json.dump({"fingerprint": job.digests}, fh, indent=1)
    os.replace(job_path + ".tmp", job_path)
    return []


def align_batches(inputs, settings, out, device, batch_size=256, sigma=1.0, seed=0, data_root=None,
                  init_poses=False, worker=0, n_workers=1):
    """Align the batches ``worker, worker + n_workers, ...`` of ``inputs`` that have no result file in
    ``out`` yet.  Returns ``(seconds, device name)``.  Unreadable images raise
    :class:`EngineInputError`; finished batches are kept."""
    table, model = inputs.table, inputs.model
    torch.manual_seed(seed)
    path = model.coords[None] if inputs.path is None else inputs.path
    aligner = MultiReferenceAligner(path, model.weights, inputs.modes, sigma, device, inputs.box, inputs.apix,
                                    settings)
    n = len(table)
    batches = [b for b in range(worker, (n + batch_size - 1) // batch_size, n_workers)
               if not os.path.exists(os.path.join(out, outputs.batch_file(b)))]
    todo = sum(min(batch_size, n - b * batch_size) for b in batches)
    log("worker %d/%d on %s: %d particles in %d batches to align (%d px working, %d templates%s)"
        % (worker + 1, n_workers, device_name(device), todo, len(batches), aligner.size,
           0 if aligner.bank is None else aligner.bank.templates.shape[0],
           ", %d conformations" % len(path) if len(path) > 1 else ""))
    progress = Progress(todo, "hemnma" if n_workers == 1 else "hemnma[%d]" % worker)
    with ImageSource(table, data_root) as source:
        for b in batches:
            pos = np.arange(b * batch_size, min((b + 1) * batch_size, n))
            try:
                images = source.read(pos)
            except MRCError as exc:
                raise EngineInputError("%s; finished batches are kept, a rerun resumes after the images are fixed"
                                       % exc) from None
            results = {}

            def work(start, stop):  # a batch too large for the GPU is split, not lost
                sub = pos[start:stop]
                init = (table.euler[sub], table.origin_A[sub]) if init_poses else (None, None)
                res = aligner.align(images[start:stop], table.ctf.subset(sub) if table.has_ctf else None, *init)
                for key, value in res.items():
                    results.setdefault(key, []).append(value)

            run_batches(len(pos), len(pos), work, device, "hemnma")
            merged = {k: np.concatenate(v) for k, v in results.items()}
            path = os.path.join(out, outputs.batch_file(b))
            np.savez(path + ".tmp.npz", positions=pos, **merged)
            os.replace(path + ".tmp.npz", path)  # a batch file exists only when complete
            progress.update(len(pos))
    log("stage times (s): %s; peak host memory %.2f GB" % (
        ", ".join("%s %.1f" % kv for kv in aligner.timings.items()), host_memory_gb()[1]))
    return progress.elapsed(), device_name(device)


def merge_results(inputs, out, outlier_threshold=3.2, data_root=None):
    """Gather the batch files into ``particles.star`` and ``results.npz``; returns the arrays
    (``euler``, ``origin_A``, ``amplitudes``, ``cost``, ``fit_quality`` and its error, ``poor_fit``,
    ``reference``, ``mahalanobis``, ``outlier``).  Raises :class:`EngineInputError` when batches are missing."""
    table, numbers = inputs.table, inputs.numbers
    files = sorted(glob.glob(os.path.join(out, outputs.BATCHES, "batch_*.npz")))
    parts = [dict(np.load(f)) for f in files]
    pos = np.concatenate([p["positions"] for p in parts]) if parts else np.zeros(0, np.int64)
    if len(np.unique(pos)) != len(table):
        raise EngineInputError("results cover %d of %d particles: rerun to resume" % (len(np.unique(pos)), len(table)))
    order = np.argsort(pos)
    res = {k: np.concatenate([p[k] for p in parts])[order] for k in ("euler", "origin_A", "amplitudes", "cost")}
    for key, missing in (("fit_quality", np.nan), ("fit_quality_error", np.nan), ("reference", 0)):
        res[key] = np.concatenate([p[key] if key in p else np.full(len(p["cost"]), missing) for p in parts])[order]
    res["reference"] = res["reference"].astype(np.int64)  # batches of older versions have none of these
    bad = ~np.all(np.isfinite(np.concatenate([res["euler"], res["origin_A"], res["amplitudes"],
                                              res["cost"][:, None]], 1)), axis=1)
    dist = np.zeros(len(table))
    if len(table) > len(numbers) + 1 and (~bad).sum() > len(numbers) + 1:
        dist[~bad] = mahalanobis(res["amplitudes"][~bad])
    dist[bad] = np.inf  # a particle without a finite result is always an outlier
    outlier = (dist > outlier_threshold) if outlier_threshold > 0 else bad.copy()
    out_table = table.with_results(res["euler"], res["origin_A"], res["amplitudes"], numbers, data_root)
    out_table.extra["cryoflexCost"] = res["cost"]
    out_table.extra["cryoflexMahalanobis"] = dist
    out_table.extra["cryoflexOutlier"] = outlier.astype(np.int64)
    poor = poor_fit(res["fit_quality"], res["fit_quality_error"])
    out_table.extra["cryoflexFitQuality"] = res["fit_quality"]
    out_table.extra["cryoflexPoorFit"] = poor.astype(np.int64)
    out_table.extra["cryoflexReference"] = res["reference"]
    out_table.to_star(os.path.join(out, outputs.STAR), relative_to=out)
    np.savez(os.path.join(out, outputs.RESULTS), mode_numbers=np.array(numbers), mahalanobis=dist,
             outlier=outlier, poor_fit=poor, **res)
    res.update(mahalanobis=dist, outlier=outlier, poor_fit=poor, n_failed=int(bad.sum()))
    return res

