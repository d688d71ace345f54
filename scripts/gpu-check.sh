#!/usr/bin/env bash
# GPU check on a lent GPU machine (the device tool sets $OUT). That machine has no Rust toolchain
# and no network, so `scripts/gpu-prepare.sh` builds everything here with `--features wgpu`
# (Vulkan; the CUDA backend cannot be built offline) and packs it into .gpu/ (stripped, xz
# binaries, the Food-Kitchen data, its config); .gl/ holds the Vulkan loader packages.
#
# Run through the device tool with carry [".gpu", ".gl"]:
#   bash scripts/gpu-check.sh
# It writes under $OUT: nvidia-smi.txt, gpu-check.log (all output), and the run folders' logs.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-check}"
mkdir -p "$OUT"
LOG="$OUT/gpu-check.log"
exec > >(tee "$LOG") 2>&1

step() { echo; echo "== $* ($(date +%T))"; }
timed() { # seconds-limit command... (skipped when the binary was not packed)
  local limit="$1"; shift
  if [ ! -x "$1" ]; then echo "-- skipped (not packed): $1"; return 0; fi
  local t0; t0=$(date +%s%N)
  timeout "$limit" "$@"; local rc=$?
  echo "-- exit $rc after $(( ($(date +%s%N) - t0) / 1000000 )) ms: $*"
  return 0
}

step "set-up"
source scripts/gpu-unpack.sh
head -12 "$OUT/nvidia-smi.txt"
BIN=$GPU_BIN
ls -la "$BIN"
# The test binaries were built in /work/main and look for their fixtures there.
if [ ! -e /work/main ]; then mkdir -p /work && ln -s "$PWD" /work/main; fi
export LLM_EMF_WEIGHTS="$PWD/.gpu/weights"
export LLM_EMF_DEVICE=wgpu
export RUST_BACKTRACE=1

step "unit tests of the model, features and training loop on wgpu"
timed 100 "$BIN/lib-tests" --test-threads=1 model:: features:: train::
step "tiny CLIP goldens on wgpu"
timed 40 "$BIN/encoders-tests" --test-threads=1 tiny_clip clip_checkpoints
step "training integration tests on wgpu"
timed 100 "$BIN/training-tests" --test-threads=1

step "quickstart on wgpu"
timed 120 "$BIN/quickstart" --device wgpu --out /tmp/quickstart-runs

step "frozen encoders at full size on wgpu (criterion)"
timed 150 "$BIN/encoders-bench" --bench --warm-up-time 2 --measurement-time 5

step "Food-Kitchen LLM-EMF, one epoch on wgpu (training throughput)"
timed 180 "$BIN/llm-emf" train --config .gpu/fk-config.json --epochs 1 --device wgpu \
    --out /tmp/fk-wgpu --quiet
cp /tmp/fk-wgpu/log.jsonl "$OUT/fk-wgpu-log.jsonl" 2>/dev/null
cp /tmp/fk-wgpu/results.json "$OUT/fk-wgpu-results.json" 2>/dev/null
step "done"
