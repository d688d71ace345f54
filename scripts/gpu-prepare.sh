#!/usr/bin/env bash
# Builds the GPU check's binaries here with `--features wgpu` and packs them, with the
# Food-Kitchen data and the config, into .gpu/ (ignored by git; carried by the device tool).
# The Vulkan loader packages go to .gl/ (see /work/.library/device/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${GPU_TARGET_DIR:-$HOME/.cache/llm-emf-gpucheck}"
cargo build --release --features wgpu --bin llm-emf --example quickstart
{ cargo test --release --features wgpu --no-run --lib --test training --test encoders 2>&1
  cargo bench --features wgpu --no-run --bench encoders 2>&1; } | tee /tmp/gpu-prepare-tests.log
exe() { # the test executable of a target, from cargo's "Executable" lines
  grep -E "Executable $1" /tmp/gpu-prepare-tests.log | sed -E 's/.*\((.*)\)/\1/' | tail -1
}
rm -rf .gpu && mkdir -p .gpu/bin
pack() { # binary name: stripped and xz-compressed (the device tool carries 64 MiB at most)
  strip -o ".gpu/bin/$2" "$1"
  xz -9 -T2 ".gpu/bin/$2"
}
pack "$CARGO_TARGET_DIR/release/llm-emf" llm-emf
pack "$CARGO_TARGET_DIR/release/examples/quickstart" quickstart
pack "$(exe 'unittests src/lib.rs')" lib-tests
pack "$(exe 'tests/training.rs')" training-tests
pack "$(exe 'tests/encoders.rs')" encoders-tests
pack "$(exe 'benches/encoders.rs')" encoders-bench
tar czf .gpu/food-kitchen.tar.gz -C ../shared/data food-kitchen
tar czf .gpu/art-office.tar.gz -C ../shared/data art-office   # titles for the encoder bench
mkdir -p .gpu/weights/clip
cp "$(scripts/fetch-weights.sh)/clip/bpe_simple_vocab_16e6.txt.gz" .gpu/weights/clip/
cp configs/food-kitchen/paper-gpu-check.json .gpu/fk-config.json
du -sh .gpu .gpu/* .gpu/bin/*
