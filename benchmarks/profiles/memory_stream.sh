#!/usr/bin/env bash
# Host-memory trace of a long hemnma run (GPU): progress lines carry the resident memory.
#   benchmarks/profiles/memory_stream.sh 40000
set -euo pipefail
n=${1:-40000}
dir=$(mktemp -d)
python3 - "$n" "$dir" <<'PY'
import os, sys
import numpy as np, torch
sys.path.insert(0, "benchmarks")
from bench_hemnma import make_dataset
from cryoflex_scipion.engine.core.atoms import read_atoms
from cryoflex_scipion.engine.nma.elastic import compute_modes, rtb_blocks
n, d = int(sys.argv[1]), sys.argv[2]
m = read_atoms("benchmarks/data/4akeA_heavy.npz")
modes = compute_modes(m.coords, 9, "RTB", 8.0, blocks=rtb_blocks(m.chains, m.resids, 10)).vectors[6:9]
m.save(os.path.join(d, "ref.npz")); np.save(os.path.join(d, "modes.npy"), modes)
make_dataset(m, modes, n, d, torch.device("cuda"), batch=1000)
PY
CRYOFLEX_PROGRESS_SECONDS=3 python3 -m cryoflex_scipion.engine hemnma --particles "$dir/particles.star" \
  --atoms "$dir/ref.npz" --modes "$dir/modes.npy" --ctf-mode phase-flipped -o "$dir/out" --batch-size 1024 "${@:2}"
