"""GPU correctness check: the engine's CUDA results against CPU float64 references.

    python benchmarks/check_gpu.py [--out benchmarks/results/check_gpu.json]

Relative errors ||gpu - ref|| / ||ref|| for the Gaussian and Fourier projectors, the CTF, and a
reconstruction; then the automatic batch-size reduction on CUDA out-of-memory (a simulation asked
to run 20,000 particles of a 17,000-atom model in one batch).
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from _common import report  # noqa: E402
from bench_core import big_model  # noqa: E402
from cryoflex_scipion.engine.__main__ import main as engine_main  # noqa: E402
from cryoflex_scipion.engine.core import geometry as g  # noqa: E402
from cryoflex_scipion.engine.core.atoms import read_atoms  # noqa: E402
from cryoflex_scipion.engine.core.ctf import CTFParams, compute_ctf  # noqa: E402
from cryoflex_scipion.engine.core.metrics import fsc, resolution_at  # noqa: E402
from cryoflex_scipion.engine.core.projection import FourierProjector, gaussian_volume, project_gaussians  # noqa: E402
from cryoflex_scipion.engine.core.reconstruction import Backprojector  # noqa: E402


def rel(a, b):
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=None)
    args = p.parse_args()
    cuda = torch.device("cuda")
    adk = read_atoms(os.path.join(HERE, "data", "adk_open_heavy.npz"))
    coords = torch.as_tensor(adk.coords - adk.center())
    w = torch.as_tensor(adk.weights)
    rots = g.random_rotations(64, torch.Generator().manual_seed(0))
    shifts = torch.randn(64, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = {"device": torch.cuda.get_device_name(cuda), "torch": torch.__version__}

    ref = project_gaussians(coords, w, 1.5, rots, 128, 1.5, shifts_px=shifts)
    gpu = project_gaussians(coords.float().to(cuda), w.float().to(cuda), 1.5, rots.float().to(cuda), 128, 1.5,
                            shifts_px=shifts.float().to(cuda))
    out["gaussian_projection_rel_err"] = rel(gpu, ref)

    vol = gaussian_volume(coords, w, 2.0, 96, 2.0)
    ref = FourierProjector(vol, 2.0).project(rots[:16])
    gpu = FourierProjector(vol.float().to(cuda), 2.0).project(rots[:16].float().to(cuda))
    out["fourier_projection_rel_err"] = rel(gpu, ref)

    params = CTFParams(np.linspace(8000, 25000, 8), np.linspace(7900, 24000, 8), 20.0, phase_shift=10.0)
    out["ctf_rel_err"] = rel(compute_ctf(params, 128, 1.2, device=cuda), compute_ctf(params, 128, 1.2, dtype=torch.float64))

    n = 3000
    rots = g.random_rotations(n, torch.Generator().manual_seed(2))
    imgs = project_gaussians(coords.float().to(cuda), w.float().to(cuda), 2.0, rots.float().to(cuda), 48, 2.0)
    maps = {}
    for device in ("cpu", "cuda"):
        bp = Backprojector(48, 2.0, device=device)
        for s in range(0, n, 500):
            bp.insert(imgs[s:s + 500].to(device), rots[s:s + 500].float(), None, None,
                      halves=torch.arange(s, min(s + 500, n)) % 2)
        maps[device] = bp.reconstruct()["full_map"]
    truth = gaussian_volume(coords, w, 2.0, 48, 2.0)
    out["reconstruction_cpu_vs_gpu_rel_err"] = rel(maps["cuda"], maps["cpu"])
    out["reconstruction_gpu_fsc05_px"] = resolution_at(fsc(maps["cuda"].cpu(), truth), 48, 2.0, 0.5) / 2.0

    big = big_model(adk)
    tmp = tempfile.mkdtemp()
    npz = os.path.join(tmp, "big.npz")
    big.save(npz)
    start = time.perf_counter()
    engine_main(["simulate", "--model", npz, "--selection", "all", "-o", os.path.join(tmp, "oom"), "-n", "20000",
                 "--box", "128", "--apix", "1.5", "--snr", "0.1", "--device", "cuda", "--batch-size", "20000"])
    summary = json.load(open(os.path.join(tmp, "oom", "summary.json")))
    out["oom_requested_batch"] = 20000
    out["oom_final_batch"] = summary["batch_size"]
    out["oom_run_s"] = time.perf_counter() - start
    report(out, args.out)


if __name__ == "__main__":
    main()
