"""CryoTRANS benchmark: accuracy on AdK (open -> closed) at 1 A/px, speed per grid size, convergence.

Parts (--parts, comma-separated; default all):
  accuracy     f0 = 4AKE chain A map at 3 A on a 96^3 grid of 1 A; targets = 1AKE maps low-passed to 3 A
               (with the final L2 stage), 5 A and 7 A (with and without rigidity), and the real 1ake.mrc
               resampled onto the grid. Scored by model-to-map FSC 0.5 against 1AKE.
  speed        iterations/s of the full-grid W2 stage for 96^3 (one AdK), 160^3 (8 AdK copies) and 256^3
               (27 copies, with rigidity), and on the CPU at 64^3.
  convergence  160^3: the single-scale 2000-iteration run of the reference README against our multi-scale
               schedule, both to the full-grid loss plateau; the multi-scale run must get there in <= 30 s.
Needs torch, numpy, scipy, and mrcfile only for the 1ake.mrc run.  Example (GPU machine):
  python benchmarks/bench_cryotrans.py --out benchmarks/results/cryotrans_h200.json
"""
import argparse
import os
import re
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _common import report  # noqa: E402

from cryoflex_scipion.engine.core.atoms import read_atoms  # noqa: E402
from cryoflex_scipion.engine.core.maps import model_map, resample_map  # noqa: E402
from cryoflex_scipion.engine.core.metrics import fsc, model_map_fsc, resolution_at  # noqa: E402
from cryoflex_scipion.engine.cryotrans import sinkhorn  # noqa: E402
from cryoflex_scipion.engine.cryotrans.density import auto_threshold, prepare_densities  # noqa: E402
from cryoflex_scipion.engine.cryotrans.morph import Morph, MorphSettings, default_schedule, parse_schedule  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OPEN = os.path.join(HERE, "data", "4akeA_heavy.npz")
CLOSED = os.path.join(HERE, "data", "1akeA_heavy.npz")
REAL_TARGET = os.path.join(HERE, "..", "tests", "data", "1ake.mrc")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _score(model, vol, size, apix):
    curve, _ = model_map_fsc(model[0], model[1], torch.as_tensor(np.asarray(vol, np.float64)), apix)
    return resolution_at(curve, size, apix, 0.5)


QUICK = {"on": False}  # --quick: tiny sizes and iterations, to check the script on a CPU


def _log_stage_ends(message):
    found = re.search(r"iteration (\d+)/(\d+)", message)
    if found is None or found.group(1) == found.group(2):
        print("    " + message, flush=True)


def _scaled(schedule):
    if not QUICK["on"]:
        return schedule
    return ",".join(":".join(f[:-1] + [str(max(2, int(f[-1]) // 20))]) for f in (i.split(":") for i in schedule.split(",")))


def _morph(f0, f1, size, apix, schedule, rigidity, device, log_every=200):
    a0, a1, scale0 = prepare_densities(f0, f1, auto_threshold(f0), auto_threshold(f1))
    settings = MorphSettings(stages=parse_schedule(_scaled(schedule), 1e-3), rigidity=rigidity, log_every=log_every)
    morph = Morph(a0, a1, settings, device=device, box_length=size * apix)
    _sync(device)
    t = time.time()
    morph.run(log=_log_stage_ends)
    _sync(device)
    seconds = time.time() - t
    maps, *_ = morph.trajectory()
    return maps[-1].double().cpu().numpy() * scale0, seconds, morph, int((a0 > 0).sum())


def accuracy(device, size=96, apix=1.0):
    if QUICK["on"]:
        size, apix = 40, 2.0
    m0, m1 = read_atoms(OPEN), read_atoms(CLOSED)
    closed = (m1.coords, m1.weights)  # model frame = box frame (maps with centred origin)
    f0 = model_map(m0.coords, m0.weights, size, apix, max(3.0, 2 * apix), device=device)
    runs = []
    targets = [(3.0, "4:600,2:300,1:600,l2:1:400", 2.0), (5.0, "4:600,2:300,1:300", 2.0),
               (7.0, "4:600,2:300,1:300", 2.0), (7.0, "4:600,2:300,1:300", 0.0)]
    for res, schedule, rigidity in targets:
        if res < 2 * apix:
            continue
        f1 = model_map(m1.coords, m1.weights, size, apix, res, device=device)
        gen, seconds, morph, n = _morph(f0, f1, size, apix, schedule, rigidity, device)
        row = {"target": "1AKE model map at %.0f A" % res, "schedule": schedule, "rigidity": rigidity,
               "particles": n, "seconds": seconds, "fsc05_f0_A": _score(closed, f0, size, apix),
               "fsc05_f1_A": _score(closed, f1, size, apix), "fsc05_generated_A": _score(closed, gen, size, apix),
               "fsc05_generated_vs_f1_A": resolution_at(fsc(gen, f1), size, apix, 0.5)}
        print(row, flush=True)
        runs.append(row)
    try:
        from cryoflex_scipion.engine.core.io.mrc import read_map
        real, info = read_map(REAL_TARGET)
        f1 = resample_map(real, info.apix, info.origin, size, apix, (-(size // 2) * apix,) * 3)
        gen, seconds, morph, n = _morph(f0, f1, size, apix, "4:600,2:300,1:300", 2.0, device)
        row = {"target": "1ake.mrc (2 A/px, 64^3) resampled to the 1 A grid", "schedule": "4:600,2:300,1:300",
               "rigidity": 2.0, "particles": n, "seconds": seconds, "fsc05_f0_A": _score(closed, f0, size, apix),
               "fsc05_f1_A": _score(closed, f1, size, apix), "fsc05_generated_A": _score(closed, gen, size, apix),
               "fsc05_generated_vs_f1_A": resolution_at(fsc(gen, f1), size, apix, 0.5)}
        print(row, flush=True)
        runs.append(row)
    except ImportError as exc:
        runs.append({"target": "1ake.mrc", "skipped": str(exc)})
    return runs


def _complex(model, copies, spacing):
    """``copies``^3 copies of a model on a cubic lattice (a synthetic large complex)."""
    offsets = (np.arange(copies) - (copies - 1) / 2.0) * spacing
    shifts = np.stack(np.meshgrid(offsets, offsets, offsets, indexing="ij"), -1).reshape(-1, 3)
    coords = np.concatenate([model.coords + s for s in shifts])
    return coords, np.tile(model.weights, len(shifts))


def _problem(size, apix, copies, spacing, device):
    m0, m1 = read_atoms(OPEN), read_atoms(CLOSED)
    c0, w0 = _complex(m0, copies, spacing)
    c1, w1 = _complex(m1, copies, spacing)
    f0 = model_map(c0, w0, size, apix, max(3.0, 2 * apix), device=device)
    f1 = model_map(c1, w1, size, apix, 7.0, device=device)
    return f0, f1, (c1, w1)


def _rate(f0, f1, size, apix, iterations, rigidity, device):
    """Iterations/s of a full-grid W2 stage (after 3 warm-up iterations) and peak GPU memory."""
    a0, a1, _ = prepare_densities(f0, f1, auto_threshold(f0), auto_threshold(f1))
    settings = MorphSettings(stages=parse_schedule("1:3", 1e-3), rigidity=rigidity, log_every=10 ** 6)
    morph = Morph(a0, a1, settings, device=device, box_length=size * apix)
    morph.run(log=lambda m: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    morph.settings.stages = parse_schedule("1:%d" % iterations, 1e-3)
    _sync(device)
    t = time.time()
    morph.run(log=lambda m: None)
    _sync(device)
    rate = iterations / (time.time() - t)
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == "cuda" else None
    return {"size": size, "particles": int((a0 > 0).sum()), "rigidity": rigidity, "iterations_per_s": rate,
            "peak_gpu_memory_GiB": peak}


def speed(device):
    rows = []
    cases = ((96, 1, 200, 0.0), (96, 1, 200, 2.0), (160, 2, 100, 0.0), (160, 2, 100, 2.0), (256, 3, 30, 2.0))
    if QUICK["on"]:
        cases = ((32, 1, 3, 0.0), (48, 1, 3, 2.0))
    for size, copies, iterations, rigidity in cases:
        f0, f1, _ = _problem(size, 1.0, copies, 60.0, device)
        row = _rate(f0, f1, size, 1.0, iterations, rigidity, device)
        print(row, flush=True)
        rows.append(row)
    cpu = torch.device("cpu")
    cpu_size = 32 if QUICK["on"] else 64
    f0, f1, _ = _problem(cpu_size, 1.0, 1, 60.0, cpu)
    row = _rate(f0, f1, cpu_size, 1.0, 3 if QUICK["on"] else 10, 0.0, cpu)
    row["device"] = "cpu (%d threads)" % torch.get_num_threads()
    print(row, flush=True)
    rows.append(row)
    return rows


def _plateau(morph):
    rows = [r for r in morph.history if r["stage"] == len(morph.settings.stages) - 1]
    tail = rows[-max(1, len(rows) // 10):]
    return float(np.mean([r["w2"] for r in tail]))


EXTRA_SCHEDULES = []


def convergence(device, size=160, apix=1.0):
    if QUICK["on"]:
        size, apix = 48, 2.0
    f0, f1, model = _problem(size, apix, 2, 60.0, device)
    out = {}
    default = ",".join("%d:%d" % (st.factor, st.iterations) for st in default_schedule(size, 1000))
    runs = [("reference_single_scale", "1:2000"), ("multiscale_default", default),
            ("multiscale_long", "4:1000,2:500,1:500")]
    if EXTRA_SCHEDULES:  # --schedules: only these (the reference's figures come from an earlier run)
        runs = [("multiscale_%s" % sch, sch) for sch in EXTRA_SCHEDULES]
    for name, schedule in runs:
        gen, seconds, morph, n = _morph(f0, f1, size, apix, schedule, 0.0, device, log_every=20)
        out[name] = {"schedule": schedule, "seconds": seconds, "final_full_grid_w2": _plateau(morph),
                     "fsc05_generated_A": _score(model, gen, size, apix), "particles": n,
                     "curve": [(r["seconds"], r["stage"], r["w2"]) for r in morph.history]}
        print(name, {k: v for k, v in out[name].items() if k != "curve"}, flush=True)
    out["fsc05_f0_A"] = _score(model, f0, size, apix)
    out["fsc05_f1_A"] = _score(model, f1, size, apix)
    ref = out.get("reference_single_scale")
    if ref is not None:
        start = ref["curve"][0][2]
        for name in (n for n, _ in runs[1:]):
            # Distance to the reference plateau as a fraction of the loss drop of the reference run.
            out[name]["plateau_gap_fraction"] = ((out[name]["final_full_grid_w2"] - ref["final_full_grid_w2"])
                                                 / (start - ref["final_full_grid_w2"]))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="accuracy,speed,convergence")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None)
    p.add_argument("--schedules", nargs="*", default=[], help="convergence: run only these schedules")
    p.add_argument("--tf32", action="store_true", help="TF32 matrix products (the velocity MLP) on the GPU")
    p.add_argument("--quick", action="store_true", help="tiny sizes and iterations (a check of the script)")
    args = p.parse_args()
    QUICK["on"] = args.quick
    EXTRA_SCHEDULES.extend(args.schedules)
    if args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
    device = torch.device("cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu")
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "numpy": np.__version__, "date": time.strftime("%Y-%m-%d")}
    for part in args.parts.split(","):
        t = time.time()
        result[part] = {"accuracy": accuracy, "speed": speed, "convergence": convergence}[part](device)
        result[part + "_seconds"] = time.time() - t
        result["sinkhorn_rows"] = dict(sinkhorn.STATS)
        report(result, args.out)  # save after every part: a time-out keeps what was done
    return 0


if __name__ == "__main__":
    sys.exit(main())
