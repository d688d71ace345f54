#!/usr/bin/env bash
# Training throughput of llm_emf against the PyTorch peer (../shared/peers/pytorch-llm-emf),
# like for like: the same data and shapes (Food-Kitchen, q = 256, 1 head, 2 blocks, batch 256,
# 512 uniform negatives per domain, every position trained), the same thread count, and the
# same kind of batches on both sides, one whole epoch (every training sequence once) each:
#
#   sorted  batches of similar length (peer: --bench-epoch sorted; crate: --batching sorted)
#   random  batches of a shuffled epoch (peer: --bench-epoch random; crate: --batching random)
#
# For each thread count and batching, REPS repetitions of (PyTorch, crate), interleaved; the
# table reports the median of each side and their ratio, the crate's validation rate (abxi
# protocol, 999 candidates) from the same runs, and the peak resident memory of each process
# (/usr/bin/time). The crate splits each batch into as many shards as threads (--shards).
# Raw timings go to $OUT/results.tsv, the table to $OUT/summary.md.
#
# With BASE_BIN (an older build of the crate), each crate run's model is also evaluated on the
# validation split by both binaries (`llm-emf evaluate`, order alternating between
# repetitions), so that the validation rates of the two builds are compared in one run.
#
# The machine must be otherwise idle: the script refuses to start while the one-minute load
# average is above MAX_LOAD (other work would slow both sides unevenly), unless FORCE=1.
#
# Usage: scripts/bench-vs-pytorch.sh [THREADS...]      (default: 2 1)
# Environment:
#   REPS=3                  repetitions per thread count and batching (the median is reported)
#   BATCHINGS="sorted random"
#   MAX_LOAD=0.5            highest one-minute load average at the start
#   LLM_EMF_BIN=path        the crate's binary (default: built here, release, default features)
#   TORCH_PYTHON=path       python with torch (default ~/.cache/torch-venv/bin/python; set up:
#                           python3 -m venv ~/.cache/torch-venv &&
#                           ~/.cache/torch-venv/bin/pip install torch numpy)
#   OUT=dir                 where runs and the summary go (default target/bench-vs-pytorch)
#   BASE_BIN=path           an older llm-emf binary whose validation rate is measured beside
#                           this one's on the same models (default: none)
set -euo pipefail
cd "$(dirname "$0")/.."
PEER=../shared/peers/pytorch-llm-emf
REPS=${REPS:-3}
BATCHINGS=(${BATCHINGS:-sorted random})
MAX_LOAD=${MAX_LOAD:-0.5}
THREADS=("$@")
[ ${#THREADS[@]} -eq 0 ] && THREADS=(2 1)
TORCH_PYTHON=${TORCH_PYTHON:-$HOME/.cache/torch-venv/bin/python}
OUT=${OUT:-target/bench-vs-pytorch}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/llm-emf-target}
[ -x "$TORCH_PYTHON" ] || { echo "no python with torch at $TORCH_PYTHON (see the header of $0)" >&2; exit 2; }
[ -f "$PEER/llm_emf_ref.py" ] || { echo "the PyTorch peer is not at $PEER" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "/usr/bin/time is needed for the peak memory (apt-get install time)" >&2; exit 2; }
if [ -z "${LLM_EMF_BIN:-}" ]; then
    cargo build --release --quiet --bin llm-emf
    LLM_EMF_BIN=$CARGO_TARGET_DIR/release/llm-emf
fi
load=$(cut -d' ' -f1 /proc/loadavg)
if [ -z "${FORCE:-}" ] && python3 -c "import sys; sys.exit(0 if float('$load') > float('$MAX_LOAD') else 1)"; then
    echo "the machine is busy (one-minute load $load > $MAX_LOAD): benchmarks need it idle; stop the other work or set FORCE=1" >&2
    exit 3
fi
echo "load average at start: $load ($(nproc) cores)"
mkdir -p "$OUT"
RESULTS=$OUT/results.tsv
printf 'batching\tthreads\trep\tpytorch_seq_s\tpytorch_peak_kb\tcrate_seq_s\tcrate_peak_kb\tcrate_valid_ex_s\teval_ex_s\tbase_eval_ex_s\n' > "$RESULTS"

# Validation examples/s of `llm-emf evaluate` by binary $1 on run $2 at $3 threads.
eval_rate() {
    RAYON_NUM_THREADS=$3 "$1" evaluate --run "$2" --split valid --json 2>/dev/null |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["examples_per_second"])'
}

for batching in "${BATCHINGS[@]}"; do
    for t in "${THREADS[@]}"; do
        for rep in $(seq 1 "$REPS"); do
            torch_out=$OUT/torch-$batching-t$t-r$rep.txt
            /usr/bin/time -f 'PEAK_KB %M' -o "$torch_out.time" \
                "$TORCH_PYTHON" "$PEER/llm_emf_ref.py" --dim 256 --heads 1 --threads "$t" \
                --bench-epoch "$batching" > "$torch_out"
            torch=$(sed -n 's/^BENCH epoch .* seq\/s \([0-9.]*\).*/\1/p' "$torch_out")
            torch_kb=$(sed -n 's/^PEAK_KB \([0-9]*\)/\1/p' "$torch_out.time")
            run=$OUT/run-$batching-t$t-r$rep
            rm -rf "$run"
            RAYON_NUM_THREADS=$t /usr/bin/time -f 'PEAK_KB %M' -o "$run.time" \
                "$LLM_EMF_BIN" train --config "$PEER/crate-bench-config.json" \
                --preset paper --shards "$t" --batching "$batching" --out "$run" --quiet > /dev/null
            crate_kb=$(sed -n 's/^PEAK_KB \([0-9]*\)/\1/p' "$run.time")
            read -r crate valid < <(python3 - "$run/log.jsonl" <<'EOF'
import json, sys
line = json.loads(open(sys.argv[1]).readline())
print(line["train_sequences_per_second"], line["valid"]["examples_per_second"])
EOF
)
            eval_new=; eval_base=
            if [ -n "${BASE_BIN:-}" ]; then
                if [ $((rep % 2)) -eq 1 ]; then
                    eval_new=$(eval_rate "$LLM_EMF_BIN" "$run" "$t")
                    eval_base=$(eval_rate "$BASE_BIN" "$run" "$t")
                else
                    eval_base=$(eval_rate "$BASE_BIN" "$run" "$t")
                    eval_new=$(eval_rate "$LLM_EMF_BIN" "$run" "$t")
                fi
            fi
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$batching" "$t" "$rep" "$torch" "$torch_kb" \
                "$crate" "$crate_kb" "$valid" "$eval_new" "$eval_base" | tee -a "$RESULTS"
        done
    done
done

python3 - "$RESULTS" "$load" > "$OUT/summary.md" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
med = lambda rs, k: statistics.median(float(r[k]) for r in rs)
# The runs of each (batching, threads), in the order they ran.
groups = [(key, [r for r in rows if (r["batching"], r["threads"]) == key])
          for key in dict.fromkeys((r["batching"], r["threads"]) for r in rows)]
print(f"One epoch of Food-Kitchen each, the same batching on both sides; median of {len(rows) // max(1, len(groups))} interleaved repetitions (load average at the start {sys.argv[2]}).")
print()
print("| batching | threads | PyTorch (seq/s) | llm_emf (seq/s) | ratio llm_emf / PyTorch | llm_emf validation (examples/s) | peak memory PyTorch / llm_emf (MB) |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for key, rs in groups:
    torch, crate = med(rs, "pytorch_seq_s"), med(rs, "crate_seq_s")
    print(f"| {key[0]} | {key[1]} | {torch:.1f} | {crate:.1f} | {crate / torch:.2f} | "
          f"{med(rs, 'crate_valid_ex_s'):.0f} | {med(rs, 'pytorch_peak_kb') / 1024:.0f} / {med(rs, 'crate_peak_kb') / 1024:.0f} |")
if rows and rows[0].get("base_eval_ex_s"):
    print()
    print("Validation (`llm-emf evaluate --split valid`) of the same models by this build and by BASE_BIN:")
    print()
    print("| batching | threads | this build (examples/s) | base build (examples/s) | ratio |")
    print("| --- | --- | --- | --- | --- |")
    for key, rs in groups:
        new, base = med(rs, "eval_ex_s"), med(rs, "base_eval_ex_s")
        print(f"| {key[0]} | {key[1]} | {new:.0f} | {base:.0f} | {new / base:.2f} |")
EOF
cat "$OUT/summary.md"
