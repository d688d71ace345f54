#!/usr/bin/env bash
# GPU check, for a machine with a GPU (run by the device tool, which sets $OUT): builds with
# `--features wgpu`, runs the model and training tests on the GPU, the quickstart, and a
# Food-Kitchen training-throughput measurement, and writes the logs under $OUT.
# The CUDA backend cannot be built without network access (its build script downloads LLVM), so
# the GPU path checked here is wgpu (Vulkan). Not run yet: no session so far had a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu-check}"
mkdir -p "$OUT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target-gpu}"
export LLM_EMF_DEVICE=wgpu
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
{
  echo "== build"
  time cargo build --release --features wgpu --bin llm-emf --example quickstart
  echo "== tests on wgpu"
  time cargo test --release --features wgpu --lib model:: -- --test-threads=1
  time cargo test --release --features wgpu --test training -- --test-threads=1
  echo "== quickstart on wgpu"
  time "$CARGO_TARGET_DIR/release/examples/quickstart" --device wgpu --out "$OUT/quickstart-runs"
  echo "== Food-Kitchen throughput on wgpu (2 epochs)"
  sed "s#../shared/data/food-kitchen#${FK_DIR:-../shared/data/food-kitchen}#" \
      configs/food-kitchen-llm-emf.json > "$OUT/fk-config.json"
  time "$CARGO_TARGET_DIR/release/llm-emf" train --config "$OUT/fk-config.json" \
      --epochs 2 --device wgpu --out "$OUT/fk-wgpu" --quiet
  cp "$OUT/fk-wgpu/log.jsonl" "$OUT/fk-wgpu-log.jsonl"
} 2>&1 | tee "$OUT/gpu-check.log"
