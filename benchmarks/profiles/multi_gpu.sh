#!/usr/bin/env bash
# Multi-GPU and resume check of hemnma: N particles on all GPUs, then half of the batch results
# deleted and the command rerun (it must redo only those).   benchmarks/profiles/multi_gpu.sh 20000
set -euo pipefail
n=${1:-20000}
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
run() {
  python3 -m cryoflex_scipion.engine hemnma --particles "$dir/particles.star" --atoms "$dir/ref.npz" \
    --modes "$dir/modes.npy" --ctf-mode phase-flipped -o "$dir/out" --batch-size 1024 --gpus all "$@"
}
start=$(date +%s); run | grep -v "^hemnma" ; end=$(date +%s)
echo "all GPUs: $n particles in $((end - start)) s"
ls "$dir"/out/batches/batch_*.npz | awk 'NR % 2 == 0' | xargs rm
echo "removed $(( ( (n + 1023) / 1024 ) / 2 )) batch files; rerunning"
start=$(date +%s); run | grep -v "^hemnma" ; end=$(date +%s)
echo "resume: $((end - start)) s"
python3 -c "import numpy as np; r = np.load('$dir/out/results.npz'); print('results', r['amplitudes'].shape)"
