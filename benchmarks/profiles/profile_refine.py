"""Where the time of one HEMNMA refinement evaluation goes (GPU), for optimisation work.

    python benchmarks/profiles/profile_refine.py
"""
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from cryoflex_scipion.engine.core import geometry as g  # noqa: E402
from cryoflex_scipion.engine.core.atoms import deform, read_atoms  # noqa: E402
from cryoflex_scipion.engine.core.fourier import fft_centered, ifft_centered, freq_index  # noqa: E402
from cryoflex_scipion.engine.core.projection import _pixel_integrals, project_gaussians  # noqa: E402


def timed(fn, reps=10):
    fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps


def main():
    dev = torch.device("cuda")
    m = read_atoms(os.path.join(os.path.dirname(HERE), "data", "4akeA_heavy.npz"))
    coords = torch.as_tensor(m.coords - m.center(), device=dev, dtype=torch.float32)
    w = torch.as_tensor(m.weights, device=dev, dtype=torch.float32)
    modes = torch.randn(3, len(m), 3, device=dev)
    for size, apix, n in [(128, 0.65, 2048), (48, 1.73, 2048)]:
        rot = torch.as_tensor(g.random_rotations(n).numpy(), device=dev, dtype=torch.float32)
        amps = torch.randn(n, 3, device=dev) * 50
        shifts = torch.randn(n, 2, device=dev)
        filt = torch.randn(n, size, size, device=dev)
        xyz = deform(coords, modes, amps)
        centres = freq_index(size, dev, torch.float32) * apix
        p = torch.einsum("nij,naj->nai", rot, xyz)
        gx = _pixel_integrals(centres, p[..., 0], 1.0, apix)
        gy = _pixel_integrals(centres, p[..., 1], 1.0, apix)
        res = {
            "deform": timed(lambda: deform(coords, modes, amps)),
            "rotate": timed(lambda: torch.einsum("nij,naj->nai", rot, xyz)),
            "erf x": timed(lambda: _pixel_integrals(centres, p[..., 0], 1.0, apix)),
            "bmm": timed(lambda: torch.bmm((gy * w[None, :, None]).transpose(1, 2), gx)),
            "project (all)": timed(lambda: project_gaussians(xyz, w, 1.0, rot, size, apix, shifts_px=shifts)),
            "ctf filter (fft)": timed(lambda: ifft_centered(fft_centered(filt) * filt)),
        }
        bytes_gx = n * len(m) * (size + 1) * 4
        print("size %d, %d images, %d atoms:" % (size, n, len(m)))
        for k, v in res.items():
            print("  %-18s %8.2f ms  (%6.2f us/image)" % (k, v * 1e3, v / n * 1e6))
        print("  gx array %.0f MB; bmm %.1f TFLOP/s" % (bytes_gx / 1e6, 2 * n * size * size * len(m) / res["bmm"] / 1e12))


if __name__ == "__main__":
    main()
