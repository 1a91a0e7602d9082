"""NMA scale benchmark: time and peak memory of RTB (20 modes) on ~2,000, 20,000 and 100,000 atoms.

    python benchmarks/bench_nma.py [--sizes 1 12 60] [--cutoffs 8] [--out benchmarks/results/nma_cpu.json]

Systems are copies of the AdK chain (1,656 heavy atoms) on a 3-D grid 38 A apart, so that
neighbouring copies touch and the network is connected; each copy is its own chain and RTB
blocks are 10 residues.  Every case runs in a fresh subprocess so that its peak memory
(ru_maxrss) is its own.  ProDy's plain ANM/RTB (dense 3N x 3N Hessian) is timed where it fits.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from _common import report  # noqa: E402


def build_system(copies):
    import numpy as np
    from cryoflex_scipion.engine.core.atoms import read_atoms
    adk = read_atoms(os.path.join(HERE, "data", "adk_open_heavy.npz"))
    side = int(np.ceil(copies ** (1 / 3)))
    offsets = [np.array([i, j, k]) * 38.0 for i in range(side) for j in range(side) for k in range(side)][:copies]
    coords = np.concatenate([adk.coords - adk.center() + o for o in offsets])
    chains = np.concatenate([np.full(len(adk), "C%d" % c) for c in range(copies)])
    resids = np.tile(adk.resids, copies)
    return coords, chains, resids


def run_case(engine, copies, cutoff, n_modes):
    import numpy as np
    coords, chains, resids = build_system(copies)
    start = time.perf_counter()
    if engine == "cryoflex":
        from cryoflex_scipion.engine.nma.elastic import compute_modes, rtb_blocks
        blocks = rtb_blocks(chains, resids, 10)
        modes = compute_modes(coords, n_modes, "RTB", cutoff, blocks=blocks)
        eig = modes.eigenvalues
    else:
        import prody
        prody.confProDy(verbosity="none")
        kind = engine.split("-")[1]
        if kind == "anm":
            model = prody.ANM()
            model.buildHessian(coords, cutoff=cutoff)
        else:
            model = prody.RTB()
            from cryoflex_scipion.engine.nma.elastic import rtb_blocks
            model.buildHessian(coords, rtb_blocks(chains, resids, 10), cutoff=cutoff)
        model.calcModes(n_modes - 6)
        eig = np.concatenate([np.zeros(6), model.getEigvals()])
    seconds = time.perf_counter() - start
    with open("/proc/self/status") as fh:  # VmHWM: ru_maxrss would keep the parent's peak across exec
        peak_gb = int(fh.read().split("VmHWM:")[1].split()[0]) / 1024.0 ** 2
    return {"engine": engine, "atoms": len(coords), "cutoff_A": cutoff, "modes": n_modes, "seconds": seconds,
            "peak_rss_GB": peak_gb, "eigenvalues_7_9": [float(v) for v in eig[6:9]]}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 12, 60], help="copies of AdK (1,656 atoms each)")
    p.add_argument("--cutoffs", type=float, nargs="+", default=[8.0])
    p.add_argument("--prody-max-atoms", type=int, default=2500)
    p.add_argument("--out", default=None)
    p.add_argument("--case", nargs=3, help=argparse.SUPPRESS)  # engine copies cutoff (subprocess)
    args = p.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case[0], int(args.case[1]), float(args.case[2]), 20)))
        return
    results = []
    for cutoff in args.cutoffs:
        for copies in args.sizes:
            engines = ["cryoflex"] + (["prody-anm", "prody-rtb"] if copies * 1656 <= args.prody_max_atoms else [])
            for engine in engines:
                out = subprocess.run([sys.executable, __file__, "--case", engine, str(copies), str(cutoff)],
                                     capture_output=True, text=True)
                if out.returncode != 0:
                    results.append({"engine": engine, "atoms": copies * 1656, "cutoff_A": cutoff,
                                    "error": out.stderr.strip().splitlines()[-1:]})
                    continue
                r = json.loads(out.stdout.strip().splitlines()[-1])
                results.append(r)
                print("%-10s %7d atoms cutoff %4.1f: %8.1f s, peak %.2f GB" % (engine, r["atoms"], cutoff,
                                                                            r["seconds"], r["peak_rss_GB"]),
                      flush=True)
    import platform
    report({"benchmark": "nma", "date": time.strftime("%Y-%m-%d %H:%M"), "cpu_threads": os.cpu_count(),
            "machine": platform.machine(), "python": sys.version.split()[0], "results": results}, args.out)


if __name__ == "__main__":
    main()
