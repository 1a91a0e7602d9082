"""Time the Scipion <-> STAR conversion of a large particle set (CPU).

    python benchmarks/bench_convert.py [--n 100000] [--out benchmarks/results/convert.json]

Creates a SetOfParticles with alignment and CTF from a synthetic table
(fill_particles), writes it, reads it back into an engine table
(particles_to_table) and writes/reads the STAR file.  Prints and saves JSON.
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import report  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=100000)
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "convert.json"))
    args = p.parse_args()
    root = tempfile.mkdtemp(prefix="cryoflex-bench-")
    from cryoflex_scipion import sandbox
    sandbox.configure(root)
    from pwem.objects import Acquisition, SetOfParticles
    from cryoflex_scipion.convert import fill_particles, particles_to_table
    from cryoflex_scipion.engine.core.ctf import CTFParams
    from cryoflex_scipion.engine.core.io.mrc import write_map
    from cryoflex_scipion.engine.core.io.particles import ParticleTable, read_particles

    n = args.n
    stack = os.path.join(root, "stack.mrcs")
    write_map(stack, np.zeros((1, 8, 8), np.float32), 1.0, is_stack=True)  # only the file's existence matters
    rng = np.random.default_rng(0)
    euler = np.stack([rng.uniform(-180, 180, n), rng.uniform(0, 180, n), rng.uniform(-180, 180, n)], -1)
    du = rng.uniform(8000, 25000, n)
    table = ParticleTable(np.full(n, stack), np.arange(n), np.full(n, 1.5), np.full(n, 128), euler,
                          rng.uniform(-5, 5, (n, 2)), CTFParams(du, du - 200, rng.uniform(0, 180, n)),
                          np.ones(n, dtype=np.int64))
    acq = Acquisition(voltage=300.0, sphericalAberration=2.7, amplitudeContrast=0.1, magnification=10000)
    times = {}
    t = time.time()
    parts = SetOfParticles(filename=os.path.join(root, "particles.sqlite"))
    fill_particles(parts, table, acquisition=acq)
    parts.write()
    times["star_table_to_scipion_set_s"] = time.time() - t
    parts.close()
    parts = SetOfParticles(filename=os.path.join(root, "particles.sqlite"))
    parts.loadAllProperties()
    t = time.time()
    back = particles_to_table(parts)
    times["scipion_set_to_table_s"] = time.time() - t
    t = time.time()
    back.to_star(os.path.join(root, "particles.star"))
    times["write_star_s"] = time.time() - t
    t = time.time()
    again = read_particles(os.path.join(root, "particles.star"))
    times["read_star_s"] = time.time() - t
    assert np.allclose(again.origin_A, table.origin_A) and len(again) == n
    result = {"benchmark": "convert", "n_particles": n, "python": sys.version.split()[0], **times,
              "scipion_to_star_total_s": times["scipion_set_to_table_s"] + times["write_star_s"],
              "star_to_scipion_total_s": times["read_star_s"] + times["star_table_to_scipion_set_s"],
              "date": time.strftime("%Y-%m-%d")}
    report(result, args.out)


if __name__ == "__main__":
    main()
