#!/usr/bin/env bash
# Host-memory trace of a long hemnma run (GPU): progress lines carry the resident memory.
#   benchmarks/profiles/memory_stream.sh 40000
set -euo pipefail
n=${1:-40000}
dir=$(mktemp -d)
python3 benchmarks/bench_hemnma.py --make-dataset "$dir" --n "$n"
CRYOFLEX_PROGRESS_SECONDS=3 python3 -m cryoflex_scipion.engine hemnma --particles "$dir/particles.star" \
  --atoms "$dir/ref.npz" --modes "$dir/modes.npy" --ctf-mode phase-flipped -o "$dir/out" --batch-size 1024 "${@:2}"
