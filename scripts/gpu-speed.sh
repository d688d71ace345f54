#!/usr/bin/env bash
# Training and validation throughput of the presets on Food-Kitchen, one epoch each: `paper`,
# `recommended`, `ids` and `titles` (title rows; the text vectors come from the hashing encoder
# here, which has MiniLM's width and costs the model the same, since MiniLM's weights are too
# large to carry to the GPU machine). Writes $OUT/speed.tsv (preset, device, training seq/s,
# validation examples/s, epoch seconds) and $OUT/speed.md.
#
# On a lent GPU machine, after `scripts/gpu-prepare.sh` here (device tool, carry [".gpu", ".gl"]):
#   bash scripts/gpu-speed.sh                    (DEVICE=wgpu, the packed binary)
# On this CPU, for the column it is compared with:
#   DEVICE=cpu BIN=$CARGO_TARGET_DIR/release/llm-emf OUT=target/cpu-speed scripts/gpu-speed.sh
# Environment: DEVICE (wgpu), BIN (the llm-emf binary), OUT, PRESETS ("paper recommended ids
# titles"), DATA (../shared/data/food-kitchen), LIMIT_S (seconds per run, 600).
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-wgpu}
OUT=${OUT:-/tmp/gpu-speed}
PRESETS=(${PRESETS:-paper recommended ids titles})
DATA=${DATA:-../shared/data/food-kitchen}
LIMIT_S=${LIMIT_S:-600}
mkdir -p "$OUT"

if [ -z "${BIN:-}" ]; then
    # The GPU machine: what gpu-prepare.sh packed (Vulkan loader, binaries, data).
    source scripts/gpu-unpack.sh
    BIN=$GPU_BIN/llm-emf
fi
[ -x "$BIN" ] || { echo "no llm-emf binary at $BIN" >&2; exit 2; }
[ -d "$DATA" ] || { echo "no Food-Kitchen data at $DATA" >&2; exit 2; }

text="$OUT/fk-hashing.npy"
if [[ " ${PRESETS[*]} " == *" titles "* ]] && [ ! -f "$text" ]; then
    "$BIN" embed --data "$DATA" --text-encoder hashing --dim 384 --out "$text" \
        > "$OUT/embed.log" 2>&1 || { echo "embedding the titles failed: $OUT/embed.log" >&2; exit 1; }
fi

printf 'preset\tdevice\ttrain_seq_s\tvalid_ex_s\tepoch_s\n' > "$OUT/speed.tsv"
for preset in "${PRESETS[@]}"; do
    config="$OUT/$preset.json"
    features='{}'
    [ "$preset" = titles ] && features="{\"text\": \"$text\"}"
    cat > "$config" <<EOF
{"preset": "$preset",
 "data": {"kind": "directory", "path": "$DATA", "max_history": 50},
 "features": $features,
 "train": {"epochs": 1, "fit_row_shrinkage": false, "fit_domain_weights": false},
 "eval": {"protocol": "abxi"}}
EOF
    run="$OUT/run-$preset"
    rm -rf "$run"
    echo "== $preset on $DEVICE ($(date +%T))"
    timeout "$LIMIT_S" "$BIN" train --config "$config" --device "$DEVICE" --out "$run" --quiet \
        > "$OUT/$preset.log" 2>&1
    rc=$?
    if [ $rc -ne 0 ] || [ ! -s "$run/log.jsonl" ]; then
        echo "   failed (exit $rc): $OUT/$preset.log"
        tail -5 "$OUT/$preset.log"
        continue
    fi
    python3 - "$run/log.jsonl" "$preset" "$DEVICE" >> "$OUT/speed.tsv" <<'PY'
import json, sys
line = json.loads(open(sys.argv[1]).readline())
print(f"{sys.argv[2]}\t{sys.argv[3]}\t{line['train_sequences_per_second']:.1f}\t"
      f"{line['valid']['examples_per_second']:.0f}\t{line['train_seconds']:.1f}")
PY
    tail -1 "$OUT/speed.tsv"
done

python3 - "$OUT/speed.tsv" > "$OUT/speed.md" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
print("| preset | device | training (seq/s) | validation (examples/s) | epoch (s) |")
print("| --- | --- | --- | --- | --- |")
for r in rows:
    print(f"| `{r['preset']}` | {r['device']} | {r['train_seq_s']} | {r['valid_ex_s']} | {r['epoch_s']} |")
PY
cat "$OUT/speed.md"
