#!/usr/bin/env bash
# Multi-GPU and resume check of hemnma: N particles on all GPUs, then half of the batch results
# deleted and the command rerun (it must redo only those).   benchmarks/profiles/multi_gpu.sh 20000
set -euo pipefail
n=${1:-20000}
dir=$(mktemp -d)
python3 benchmarks/bench_hemnma.py --make-dataset "$dir" --n "$n"
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
