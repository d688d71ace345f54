#!/usr/bin/env bash
# Before/after of an engine change: one epoch of the PyTorch peer's workload (Food-Kitchen,
# q = 256, 1 head, 2 blocks, 512 negatives; ../shared/peers/pytorch-llm-emf/crate-bench-config.json
# with the paper preset) per llm-emf binary, the binaries interleaved, REPS rounds. Prints and
# appends one TSV row per run: binary, batching, threads, shards, round, training seq/s,
# validation examples/s, first-epoch loss, peak resident memory (KB).
#
#   scripts/ab-epoch.sh BATCHING THREADS BIN...      (BATCHING: sorted or random)
#
# Environment: REPS (3), SHARDS (the thread count), TSV (docs/perf/ab-epoch.tsv), OUT (runs,
# default target/ab-epoch). Run it on an otherwise idle machine: absolute rates move with the
# machine's load, so only binaries interleaved in one run are compared.
set -euo pipefail
cd "$(dirname "$0")/.."
BATCHING="${1:?usage: $0 sorted|random THREADS BIN...}"
THREADS="${2:?usage: $0 sorted|random THREADS BIN...}"
shift 2
[ $# -gt 0 ] || { echo "usage: $0 sorted|random THREADS BIN..." >&2; exit 2; }
REPS="${REPS:-3}"
SHARDS="${SHARDS:-$THREADS}"
TSV="${TSV:-docs/perf/ab-epoch.tsv}"
OUT="${OUT:-target/ab-epoch}"
CONFIG=../shared/peers/pytorch-llm-emf/crate-bench-config.json
[ -f "$CONFIG" ] || { echo "the PyTorch peer's config is not at $CONFIG" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "/usr/bin/time is needed for the peak memory (apt-get install time)" >&2; exit 2; }
for bin in "$@"; do
    [ -x "$bin" ] || { echo "not an executable: $bin" >&2; exit 2; }
done
mkdir -p "$OUT" "$(dirname "$TSV")"
[ -s "$TSV" ] || printf 'binary\tbatching\tthreads\tshards\tround\ttrain_seq_s\tvalid_ex_s\tloss\tpeak_kb\n' > "$TSV"

for round in $(seq 1 "$REPS"); do
    for bin in "$@"; do
        run="$OUT/$(basename "$bin")-$BATCHING-t$THREADS-s$SHARDS-r$round"
        rm -rf "$run"
        RAYON_NUM_THREADS=$THREADS /usr/bin/time -f '%M' -o "$run.time" "$bin" train \
            --config "$CONFIG" --preset paper --shards "$SHARDS" --batching "$BATCHING" \
            --out "$run" --quiet > /dev/null
        python3 - "$run/log.jsonl" "$run.time" "$(basename "$bin")" "$BATCHING" "$THREADS" \
            "$SHARDS" "$round" <<'EOF' | tee -a "$TSV"
import json, sys
log, peak, *labels = sys.argv[1:]
line = json.loads(open(log).readline())
kb = open(peak).read().split()[-1]
print("\t".join(labels + [f"{line['train_sequences_per_second']:.1f}",
                          f"{line['valid']['examples_per_second']:.0f}", f"{line['loss']:.4f}", kb]))
EOF
    done
done
