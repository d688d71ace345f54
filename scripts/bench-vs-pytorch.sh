#!/usr/bin/env bash
# Training throughput of llm_emf against the PyTorch peer (../shared/peers/pytorch-llm-emf) on
# the same CPU, interleaved: for each thread count, REPS repetitions of (PyTorch, crate).
#
# Workload (the peer's README): Food-Kitchen, q = 256, 1 head, 2 blocks, batch 256, 512 uniform
# negatives per domain, every position trained, batches trimmed to their longest sub-sequence.
# PyTorch times 12 steps on random batches; the crate trains one epoch (every sequence once)
# with the config the peer ships, on the `paper` preset (the model the peer implements), with
# its defaults otherwise (length-sorted batches, batches split into as many parts as threads),
# and reports train_sequences_per_second and the validation rate (abxi protocol, 999
# candidates) from its log.jsonl.
#
# Usage: scripts/bench-vs-pytorch.sh [THREADS...]      (default: 2 1)
# Environment:
#   REPS=2                       repetitions per thread count
#   LLM_EMF_BIN=path             the crate's binary (default: built here, release, default features)
#   TORCH_PYTHON=path            python with torch (default ~/.cache/torch-venv/bin/python;
#                                set up: python3 -m venv ~/.cache/torch-venv &&
#                                ~/.cache/torch-venv/bin/pip install torch numpy)
#   CRATE_ARGS="..."             extra `llm-emf train` flags (e.g. "--batching random")
#   CRATE_LEGACY=1               the binary predates --preset/--shards (to measure an old build)
#   OUT=dir                      where runs and the summary go (default target/bench-vs-pytorch)
set -euo pipefail
cd "$(dirname "$0")/.."
PEER=../shared/peers/pytorch-llm-emf
REPS=${REPS:-2}
THREADS=("$@")
[ ${#THREADS[@]} -eq 0 ] && THREADS=(2 1)
TORCH_PYTHON=${TORCH_PYTHON:-$HOME/.cache/torch-venv/bin/python}
OUT=${OUT:-target/bench-vs-pytorch}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/llm-emf-target}
if [ -z "${LLM_EMF_BIN:-}" ]; then
    cargo build --release --quiet --bin llm-emf
    LLM_EMF_BIN=$CARGO_TARGET_DIR/release/llm-emf
fi
[ -x "$TORCH_PYTHON" ] || { echo "no python with torch at $TORCH_PYTHON (see the header of $0)" >&2; exit 2; }
[ -f "$PEER/llm_emf_ref.py" ] || { echo "the PyTorch peer is not at $PEER" >&2; exit 2; }
mkdir -p "$OUT"
RESULTS=$OUT/results.tsv
printf 'threads\trep\tpytorch_seq_s\tcrate_seq_s\tcrate_valid_ex_s\tcrate_padding\n' > "$RESULTS"

for t in "${THREADS[@]}"; do
    for rep in $(seq 1 "$REPS"); do
        torch=$("$TORCH_PYTHON" "$PEER/llm_emf_ref.py" --dim 256 --heads 1 --threads "$t" --bench 12 \
            | sed -n 's/.*seq\/s \([0-9.]*\).*/\1/p')
        run=$OUT/run-t$t-r$rep
        rm -rf "$run"
        flags=(--preset paper --shards "$t")
        [ -n "${CRATE_LEGACY:-}" ] && flags=()
        # shellcheck disable=SC2086
        RAYON_NUM_THREADS=$t "$LLM_EMF_BIN" train --config "$PEER/crate-bench-config.json" \
            "${flags[@]}" --out "$run" --quiet ${CRATE_ARGS:-} > /dev/null
        read -r crate valid padding < <(python3 - "$run/log.jsonl" <<'EOF'
import json, sys
line = json.loads(open(sys.argv[1]).readline())
print(line["train_sequences_per_second"], line["valid"]["examples_per_second"], line.get("padding") or "nan")
EOF
)
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$rep" "$torch" "$crate" "$valid" "$padding" | tee -a "$RESULTS"
    done
done

python3 - "$RESULTS" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
print()
print("| threads | PyTorch (training seq/s) | llm_emf (training seq/s) | ratio llm_emf / PyTorch | llm_emf validation (examples/s) |")
print("| --- | --- | --- | --- | --- |")
for t in dict.fromkeys(r["threads"] for r in rows):
    rs = [r for r in rows if r["threads"] == t]
    torch = [float(r["pytorch_seq_s"]) for r in rs]
    crate = [float(r["crate_seq_s"]) for r in rs]
    valid = [float(r["crate_valid_ex_s"]) for r in rs]
    ratio = (sum(crate) / len(crate)) / (sum(torch) / len(torch))
    f = lambda v: ", ".join(f"{x:.1f}" for x in v)
    print(f"| {t} | {f(torch)} | {f(crate)} | {ratio:.2f} | {f(valid)} |")
EOF
