"""CryoTRANS: morph a high-resolution map f0 into a low-resolution target f1 with a neural ODE.

train: learns a velocity field (an MLP per part of f0) whose flow carries the
  voxels of f0 above threshold, as particles with their mass, onto f1, by
  minimising the Sinkhorn W2 distance on a multi-scale schedule (coarse grids
  first), with an optional rigidity prior and an optional final L2 stage.
  Writes generated.mrc (f0 transported: the high-resolution estimate of f1),
  the pseudo-trajectory frame_XX.mrc (t = 0 .. 1), model.pt, displacement.npz
  and displacement_magnitude.mrc (per voxel of f0, A), loss.csv, trajectory.cxc
  and summary.json (FSC of the generated map against f1; against an atomic
  model with --reference-model).  A rerun with the same settings resumes from
  checkpoint.pt.
predict: applies a trained model.pt to its initial map again (e.g. with
  another number of frames) and writes the same map outputs.
"""
import os

import numpy as np
import torch

from ..cli import add_overwrite_arg, fail, select_device
from ..core.atoms import read_atoms
from ..core.io.mrc import MRCError, read_map
from ..core.runtime import log, write_summary
from ..cryotrans import outputs
from ..cryotrans.inputs import InputError, check_map, target_on_grid
from ..cryotrans.pipeline import load_morph_model, make_schedule, predict_morph, prepare_morph, run_morph


def add_args(p):
    sub = p.add_subparsers(dest="action", metavar="action")
    sub.required = True
    t = sub.add_parser("train", help="learn the morph of --map0 into --map1")
    t.add_argument("--map0", required=True, help="initial map f0 (high resolution), cubic")
    t.add_argument("--map1", required=True, help="target map f1 (low resolution)")
    t.add_argument("-o", "--out", required=True, help="output folder")
    t.add_argument("--threshold0", type=float, default=None, help="density threshold of f0 (default: mean + 1 sd)")
    t.add_argument("--threshold1", type=float, default=None, help="density threshold of f1 (default: mean + 1 sd)")
    t.add_argument("--resample", action="store_true", help="resample f1 onto f0's grid when they differ")
    t.add_argument("--masks", nargs="*", default=[], help="masks partitioning f0 (up to 8), one field each")
    t.add_argument("--mask-rigidity", type=float, nargs="*", default=None,
                   help="rigidity weight of each mask (default: --rigidity for all)")
    t.add_argument("--iterations", type=int, default=1000, help="W2 iterations in all (default: %(default)s)")
    t.add_argument("--schedule", default=None,
                   help="multi-scale schedule 'factor:iterations,...' from coarse to fine, e.g. 2:300,1:700 "
                        "(default: from --iterations, 30%% on the grid binned 2x if it keeps >= 24 voxels, "
                        "the rest on the full grid)")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: %(default)s)")
    t.add_argument("--l2-iterations", type=int, default=0, help="final L2 refinement iterations (default: 0)")
    t.add_argument("--l2-lr", type=float, default=1e-4, help="learning rate of the L2 stage (default: %(default)s)")
    t.add_argument("--width", type=int, default=100, help="MLP width (default: %(default)s)")
    t.add_argument("--depth", type=int, default=3, help="MLP linear layers (default: %(default)s)")
    t.add_argument("--steps", type=int, default=10, help="Euler steps M = trajectory frames - 1 (default: %(default)s)")
    t.add_argument("--eps", type=float, default=1e-4, help="Sinkhorn epsilon in box units (default: %(default)s)")
    t.add_argument("--sinkhorn-iters", type=int, default=5, help="Sinkhorn iterations per step (default: %(default)s)")
    t.add_argument("--rigidity", type=float, default=2.0,
                   help="weight of the rigidity prior, W2 being in A^2 (0: off; default: %(default)s)")
    t.add_argument("--reference-model", default=None, help="atomic model of the target (.pdb/.npz) to score f0, "
                                                           "f1 and the generated map by model-to-map FSC")
    t.add_argument("--time-limit", type=float, default=None, help="stop after the stage that passes this (s)")
    add_overwrite_arg(t)
    _common(t)
    r = sub.add_parser("predict", help="apply a trained model.pt to its initial map")
    r.add_argument("--model", required=True, help="model.pt written by train")
    r.add_argument("--map0", required=True, help="the initial map the model was trained on")
    r.add_argument("-o", "--out", required=True)
    r.add_argument("--steps", type=int, default=None, help="Euler steps / frames - 1 (default: as trained)")
    _common(r)


def _common(p):
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--double", action="store_true", help="float64 on the device (default float32)")
    p.add_argument("--no-tf32", action="store_true",
                   help="full float32 matrix products in the velocity MLP on GPUs (default: TF32, 18%% faster "
                        "at 160^3 with the same accuracy; the Sinkhorn products are float64 either way)")


def _read(path, name):
    try:
        data, info = read_map(path)
        check_map("%s (%s)" % (name, path), data, info)
    except (MRCError, InputError, OSError) as exc:
        fail(str(exc))
    return data.astype(np.float64), info


def _read_masks(paths):
    if len(paths) > 8:
        fail("at most 8 masks (got %d)" % len(paths))
    masks = []
    for path in paths:
        try:
            mask, _ = read_map(path)
        except (MRCError, OSError) as exc:
            fail(str(exc))
        masks.append((os.path.basename(path), mask))
    return masks


def _reference_model(path):
    try:
        return read_atoms(path, "not hydrogen" if not path.endswith(".npz") else "heavy")
    except (ValueError, FileNotFoundError, ImportError) as exc:
        fail(str(exc))


def train(args):
    map0, info0 = _read(args.map0, "initial map")
    map1, info1 = _read(args.map1, "target map")
    if os.path.isfile(args.out):
        fail("-o %s is a file; give a folder" % args.out)
    try:
        map1, resampled = target_on_grid(map1, info0, info1, args.resample)
        if resampled:
            log("target resampled onto the initial map's grid (%d^3, %.4f A/px)" % (info0.shape[0], info0.apix))
        stages = make_schedule(info0.shape[0], args.iterations, args.lr, args.schedule, args.l2_iterations,
                               args.l2_lr)
        job = prepare_morph(map0, info0, map1, stages, args.threshold0, args.threshold1, _read_masks(args.masks),
                            args.mask_rigidity, args.rigidity, args.width, args.depth, args.steps, args.eps,
                            args.sinkhorn_iters, args.seed)
    except InputError as exc:
        fail(str(exc))
    for note in job.notes:
        log(note)
    reference = _reference_model(args.reference_model) if args.reference_model else None
    device = select_device(args.device, args.threads)
    dtype = torch.float64 if args.double else torch.float32
    summary = run_morph(job, args.out, device, dtype, args.time_limit, reference, args.overwrite)
    summary["target_resampled"] = resampled
    write_summary(os.path.join(args.out, outputs.SUMMARY), summary)
    log("generated map vs target: FSC 0.5 at %.2f A (f0 vs target %.2f A)%s; %.1f s" % (
        summary["fsc_generated_target"]["fsc_0.5_A"], summary["fsc_initial_target"]["fsc_0.5_A"],
        "".join("; model FSC 0.5 %s %.2f A" % (k, v) for k, v in summary.get("model_fsc_0.5_A", {}).items()),
        summary["total_seconds"]))
    return 0


def predict(args):
    try:
        state = load_morph_model(args.model)
    except InputError as exc:
        fail(str(exc))
    map0, info0 = _read(args.map0, "initial map")
    device = select_device(args.device, args.threads)
    dtype = torch.float64 if args.double else torch.float32
    try:
        summary = predict_morph(state, map0, info0, args.out, device, dtype, args.steps)
    except InputError as exc:
        fail("%s: %s" % (args.map0, exc))
    summary["model"] = args.model
    write_summary(os.path.join(args.out, outputs.SUMMARY), summary)
    return 0


def main(args):
    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = not args.no_tf32
    return train(args) if args.action == "train" else predict(args)
