#!/usr/bin/env bash
# Runs (or resumes) experiments one after the other: for each config NAME.json in DIR, the
# harness trains every seed into runs/DIR_NAME/NAME (skipping finished seeds, resuming an
# interrupted one) and writes summary.json / summary.md there. Killed at any point, the same
# command finishes the work.
#
# Usage: scripts/run-experiments.sh CONFIG_DIR SEEDS [NAME...]
#   e.g. scripts/run-experiments.sh configs/food-kitchen 1 baseline paper titles
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:?config folder}
seeds=${2:?seeds, e.g. 1,2,3}
shift 2
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/llm-emf-target}
bin=${LLM_EMF_BIN:-}
if [ -z "$bin" ]; then
    cargo build --release --quiet --bin llm-emf
    bin=$CARGO_TARGET_DIR/release/llm-emf
fi
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
    for f in "$dir"/*.json; do names+=("$(basename "$f" .json)"); done
fi
out=runs/$(basename "$dir")
for name in "${names[@]}"; do
    echo "== $name"
    mkdir -p "$out/$name"
    # One line per epoch in train.log (no progress bar when not on a terminal).
    "$bin" experiment --config "$dir/$name.json" --seeds "$seeds" --out "$out/$name" \
        > /dev/null 2>> "$out/$name/train.log"
    cat "$out/$name/summary.md"
done
