"""A whole CryoTRANS morph, as the command line, the protocol and the benchmarks run it.

- :func:`prepare_morph`: thresholds, densities, partition labels and the multi-scale schedule of a
  pair of maps (f0 high resolution, f1 the low-resolution target on f0's grid) -> :class:`MorphJob`;
- :func:`run_morph`: trains the flow (resuming from the checkpoint of the same job), saves the model,
  writes the trajectory, the generated map and the displacement field, and returns the summary;
- :func:`predict_morph`: replays a saved model on its initial map.

File names are in :mod:`.outputs`.  Unusable input raises :class:`.inputs.InputError`.
"""
import csv
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..core.maps import box_centre
from ..core.metrics import fsc, model_map_fsc, resolution_at
from ..core.io.mrc import write_map
from ..core.runtime import device_name, log
from . import outputs
from .density import auto_threshold, prepare_densities
from .flow import Flow
from .inputs import InputError, labels_from_masks
from .morph import Morph, MorphSettings, default_schedule, parse_schedule, trajectory

__all__ = ["MODEL_VERSION", "MorphJob", "make_schedule", "prepare_morph", "run_morph", "load_morph_model",
           "predict_morph", "model_map_scores"]

MODEL_VERSION = 1
_LOSS_KEYS = ["stage", "kind", "grid", "iteration", "seconds", "loss", "w2", "l2", "rigidity"]


@dataclass
class MorphJob:
    map0: np.ndarray          # f0 as read (float64)
    map1: np.ndarray          # f1 on f0's grid
    info0: object             # MapInfo of f0 (grid of everything written)
    densities: tuple          # (a0, a1) thresholded, normalised densities
    scale0: float             # f0's scale (maps are written back in its units)
    thresholds: tuple         # (t0, t1)
    labels: np.ndarray        # part label per voxel of f0, or None
    n_parts: int
    notes: list
    settings: MorphSettings


def make_schedule(size, iterations=1000, lr=1e-3, schedule=None, l2_iterations=0, l2_lr=1e-4):
    """The stages of the morph: ``schedule`` ('factor:iterations,...' coarse to fine) or the default
    split of ``iterations``, plus an optional final L2 stage."""
    try:
        stages = parse_schedule(schedule, lr, l2_lr) if schedule else default_schedule(size, iterations, lr)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if l2_iterations > 0:
        stages += parse_schedule("l2:1:%d" % l2_iterations, lr, l2_lr)
    for s in stages:
        if -(-size // s.factor) < 4:
            raise InputError("schedule factor %d leaves a %d^3 grid: use factors that keep at least 4 voxels"
                             % (s.factor, -(-size // s.factor)))
    if not stages or any(s.iterations < 1 for s in stages):
        raise InputError("every stage of the schedule needs at least one iteration")
    return stages


def prepare_morph(map0, info0, map1, stages, threshold0=None, threshold1=None, masks=(), mask_rigidity=None,
                  rigidity=2.0, width=100, depth=3, steps=10, eps=1e-4, sinkhorn_iters=5, seed=0):
    """Everything a morph needs -> :class:`MorphJob`.  ``masks``: ``[(name, mask array on f0's grid)]``
    (at most 8), each moved by its own field with its own rigidity weight."""
    if steps < 1:
        raise InputError("--steps must be at least 1 (the trajectory has steps + 1 frames)")
    if width < 1 or depth < 1 or eps <= 0 or sinkhorn_iters < 1 or rigidity < 0:
        raise InputError("width, depth and Sinkhorn iterations must be at least 1, eps positive, rigidity >= 0")
    if len(masks) > 8:
        raise InputError("at most 8 masks (got %d)" % len(masks))
    size, apix = info0.shape[0], info0.apix
    t0 = auto_threshold(map0) if threshold0 is None else threshold0
    t1 = auto_threshold(map1) if threshold1 is None else threshold1
    try:
        a0, a1, scale0 = prepare_densities(map0, map1, t0, t1)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    labels, n_parts, notes = labels_from_masks(list(masks), map0.shape, a0 > 0)
    part_rigidity = None
    if masks:
        given = mask_rigidity if mask_rigidity else [rigidity] * len(masks)
        if len(given) != len(masks):
            raise InputError("--mask-rigidity needs one weight per mask (%d masks, %d weights)"
                             % (len(masks), len(given)))
        part_rigidity = list(given) + [rigidity] * (n_parts - len(masks))
    top = max(part_rigidity) if part_rigidity else rigidity
    part_weights = [w / top for w in part_rigidity] if part_rigidity and top > 0 else None
    settings = MorphSettings(stages=stages, width=width, depth=depth, steps=steps, eps=eps,
                             sinkhorn_iters=sinkhorn_iters, rigidity=top, part_weights=part_weights, seed=seed,
                             extra={"size": size, "apix": apix, "threshold0": t0, "threshold1": t1,
                                    "mass0": round(float(a0.sum()), 6),
                                    "mass1_raw": round(float(map1[map1 >= t1].sum()), 6), "parts": n_parts})
    return MorphJob(map0, map1, info0, (a0, a1), scale0, (t0, t1), labels, n_parts, notes, settings)


def _write_loss(path, history):
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=_LOSS_KEYS, extrasaction="ignore")
        w.writeheader()
        for row in history:
            w.writerow({k: row.get(k, "") for k in _LOSS_KEYS})


def write_trajectory(out, maps, start, end, masses, index, scale0, info0, log_frames=True):
    """Frames, generated map, displacement field and the ChimeraX script; returns (generated, displacement)."""
    size, apix, origin = info0.shape[0], info0.apix, info0.origin
    names = []
    for i, m in enumerate(maps):
        write_map(os.path.join(out, outputs.frame(i)), m.double().cpu().numpy() * scale0, apix, origin)
        names.append(outputs.frame(i))
    generated = maps[-1].double().cpu().numpy() * scale0
    write_map(os.path.join(out, outputs.GENERATED), generated, apix, origin)
    box_length = size * apix
    start_a = start.double().cpu().numpy() * box_length + box_centre(size, apix, origin)
    disp = (end - start).double().cpu().numpy() * box_length
    idx = index.cpu().numpy()
    np.savez(os.path.join(out, outputs.DISPLACEMENT), positions_A=start_a, displacement_A=disp,
             masses=masses.double().cpu().numpy(), index_zyx=idx)
    magnitude = np.zeros(info0.shape, dtype=np.float32)
    magnitude[idx[:, 0], idx[:, 1], idx[:, 2]] = np.linalg.norm(disp, axis=1)
    write_map(os.path.join(out, outputs.DISPLACEMENT_MAGNITUDE), magnitude, apix, origin)
    with open(os.path.join(out, outputs.TRAJECTORY_SCRIPT), "w") as fh:
        fh.write("# CryoTRANS pseudo-trajectory: open in ChimeraX (open %s)\n" % outputs.TRAJECTORY_SCRIPT)
        fh.write("open %s vseries true\n" % " ".join(names))
        fh.write("volume #1 style surface\nvseries play #1 loop true direction oscillate\n")
    if log_frames:
        log("wrote %s, %d frames, displacement field (mean %.2f A, max %.2f A)" % (
            outputs.GENERATED, len(maps), float(np.average(np.linalg.norm(disp, axis=1), weights=masses.cpu().numpy())),
            float(np.linalg.norm(disp, axis=1).max())))
    return generated, disp


def _fsc_summary(a, b, size, apix):
    curve = fsc(a, b)
    return {"fsc_0.5_A": resolution_at(curve, size, apix, 0.5), "fsc_0.143_A": resolution_at(curve, size, apix, 0.143),
            "curve": [float(c) for c in curve]}


def model_map_scores(model, maps, info0):
    """Model-to-map FSC 0.5 resolution (A) of each map in ``maps`` (name -> array on f0's grid)."""
    size, apix = info0.shape[0], info0.apix
    coords = model.coords - box_centre(size, apix, info0.origin)
    scores = {}
    for name, vol in maps.items():
        curve, _ = model_map_fsc(coords, model.weights, torch.as_tensor(vol), apix)
        scores[name] = resolution_at(curve, size, apix, 0.5)
    return scores


def _stage_summary(history, morph):
    out = []
    for i, stage in enumerate(morph.settings.stages):
        rows = [r for r in history if r["stage"] == i]
        if not rows:
            continue
        seconds = morph.stage_seconds.get(str(i), rows[-1]["seconds"])
        out.append({"kind": stage.kind, "factor": stage.factor, "grid": rows[-1]["grid"],
                    "iterations": rows[-1]["iteration"], "seconds": seconds,
                    "iterations_per_s": rows[-1]["iteration"] / max(seconds, 1e-9),
                    "loss_first": rows[0]["loss"], "loss_last": rows[-1]["loss"]})
    return out


def run_morph(job, out, device, dtype=torch.float32, time_limit=None, reference_model=None, overwrite=False):
    """Train the morph of ``job`` into the folder ``out`` and write its outputs; returns the summary.
    ``reference_model``: an atomic model of the target (AtomModel) to score f0, f1 and the generated map.
    A checkpoint in ``out`` resumes only the same job; another job's is refused
    (:class:`..core.training.checkpoint.CheckpointMismatch`) unless ``overwrite``."""
    t_start = time.time()
    size, apix = job.info0.shape[0], job.info0.apix
    a0, a1 = job.densities
    t0, t1 = job.thresholds
    log("CryoTRANS on %s: %d^3 voxels of %.3f A; thresholds f0 %.4g (%d voxels), f1 %.4g (%d voxels); %d part%s; "
        "rigidity %g" % (device_name(device), size, apix, t0, int((a0 > 0).sum()), t1, int((a1 > 0).sum()),
                          job.n_parts, "s" if job.n_parts > 1 else "", job.settings.rigidity))
    os.makedirs(out, exist_ok=True)
    summary_path = os.path.join(out, outputs.SUMMARY)
    morph = Morph(a0, a1, job.settings, labels=job.labels, device=device, dtype=dtype, box_length=size * apix)
    t_train = time.time()
    checkpoint = os.path.join(out, outputs.CHECKPOINT)
    state = morph.resume_state(checkpoint, "restart" if overwrite else "error")  # refuse before removing anything
    if os.path.exists(summary_path):  # the outputs are rewritten below; until then they are not complete
        os.remove(summary_path)
    history = morph.run(checkpoint=checkpoint, log=log, time_limit=time_limit, state=state)
    train_seconds = time.time() - t_train
    _write_loss(os.path.join(out, outputs.LOSS), history)
    torch.save({"version": MODEL_VERSION, "flow": morph.flow.state_dict(), "flow_config": morph.flow.config,
                "settings": asdict(job.settings), "size": size, "apix": apix, "origin": tuple(job.info0.origin),
                "threshold0": t0, "scale0": job.scale0,
                "labels": None if job.labels is None else job.labels.astype(np.uint8)},
               os.path.join(out, outputs.MODEL))
    maps, start, end, masses, index = morph.trajectory()
    generated, disp = write_trajectory(out, maps, start, end, masses, index, job.scale0, job.info0)
    w = masses.double().cpu().numpy()
    summary = {"command": "cryotrans train", "fsc_generated_target": _fsc_summary(generated, job.map1, size, apix),
               "fsc_initial_target": _fsc_summary(job.map0, job.map1, size, apix),
               "displacement_mean_A": float(np.average(np.linalg.norm(disp, axis=1), weights=w)),
               "displacement_max_A": float(np.linalg.norm(disp, axis=1).max()),
               "loss_final": morph.history[-1]["loss"] if morph.history else None}
    if reference_model is not None:
        summary["model_fsc_0.5_A"] = model_map_scores(reference_model, {"initial": job.map0, "target": job.map1,
                                                                        "generated": generated}, job.info0)
    summary.update({"device": device_name(device), "size": size, "apix": apix, "threshold0": t0, "threshold1": t1,
                    "parts": job.n_parts, "notes": job.notes, "settings": asdict(job.settings),
                    "particles": int((a0 > 0).sum()), "train_seconds": train_seconds,
                    "total_seconds": time.time() - t_start, "stages": _stage_summary(history, morph),
                    "frames": len(maps), "files": outputs.FILES})
    return summary


def load_morph_model(path):
    """The saved state of a trained morph (``model.pt``); raises :class:`InputError` if it is not one."""
    if not os.path.exists(path):
        raise InputError("model not found: %s" % path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise InputError("%s: not a readable CryoTRANS model (%s)" % (path, str(exc).splitlines()[0])) from None
    if not isinstance(state, dict) or state.get("version") != MODEL_VERSION or "flow" not in state:
        raise InputError("%s is not a CryoTRANS model written by this version of CryoFlex" % path)
    return state


def predict_morph(state, map0, info0, out, device, dtype=torch.float32, steps=None):
    """Replay a trained morph on its initial map; writes the trajectory outputs, returns the summary."""
    if info0.shape[0] != state["size"] or abs(info0.apix - state["apix"]) > 1e-3 * state["apix"]:
        raise InputError("the model was trained on a %d^3 map of %.4f A/px; the map is %d^3 of %.4f A/px"
                         % (state["size"], state["apix"], info0.shape[0], info0.apix))
    if steps is not None and steps < 1:
        raise InputError("--steps must be at least 1")
    flow = Flow(**state["flow_config"]).to(device, dtype)
    flow.load_state_dict(state["flow"])
    t0 = state["threshold0"]
    m0 = np.where(map0 >= t0, map0, 0.0)
    if not np.any(m0 > 0):
        raise InputError("no voxel of the map is above the model's threshold %g" % t0)
    scale0 = float(m0.max())
    labels = None if state["labels"] is None else np.asarray(state["labels"], np.int64)
    maps, start, end, masses, index = trajectory(flow, m0 / scale0, labels, device, dtype, steps)
    os.makedirs(out, exist_ok=True)
    _, disp = write_trajectory(out, maps, start, end, masses, index, scale0, info0)
    return {"command": "cryotrans predict", "frames": len(maps), "device": device_name(device),
            "displacement_mean_A": float(np.average(np.linalg.norm(disp, axis=1), weights=masses.cpu().numpy())),
            "displacement_max_A": float(np.linalg.norm(disp, axis=1).max()), "files": outputs.FILES}
