#!/usr/bin/env python3
"""Items added to a served model score as the same items held out of its training.

Takes a Food-Kitchen run trained with `hold_out` (its `held_out.txt`) and the model folder
exported from it; adds every held-out item again as a new item under a new key with only its
title (`llm-emf add-items --weights MINILM`, the library embeds the title), then asks the folder
for the whole Kitchen ranking of test histories whose target is a held-out item and compares,
per request, the score and rank of each held-out item with those of its added twin.

Usage: scripts/hold-out-twins.py RUN MODEL_DIR MINILM_DIR [--users N] [--bin llm-emf]
(MODEL_DIR must not exist yet: it is exported from RUN and then receives the twins.)
"""
import argparse
import bisect
import json
import os
import subprocess
import sys
import tempfile

DATA = "../shared/data/food-kitchen"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("model")
    ap.add_argument("minilm")
    ap.add_argument("--users", type=int, default=40)
    ap.add_argument("--bin", default="llm-emf")
    a = ap.parse_args()

    subprocess.run([a.bin, "export", a.run, "--out", a.model], check=True)
    items = [json.loads(l) for l in open(os.path.join(a.model, "items.jsonl"))]
    by_key = {it["key"]: it for it in items if it.get("key") is not None}
    held = [int(l) for l in open(os.path.join(a.run, "held_out.txt")) if l.strip()]
    held_set = set(held)
    domain = {items[i]["domain"] for i in held}
    if len(domain) != 1:
        sys.exit(f"held-out items of more than one domain: {domain}")
    domain = domain.pop()

    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for i in held:
            f.write(json.dumps({"domain": domain, "key": f"twin-{items[i]['key']}",
                                "title": items[i]["title"]}) + "\n")
        new_items = f.name
    subprocess.run([a.bin, "add-items", "--model", a.model, "--items", new_items,
                    "--weights", a.minilm], check=True)
    os.unlink(new_items)
    # Added items take the global ids after the catalogue's, in the order they were added.
    added = [json.loads(l) for l in open(os.path.join(a.model, "added.jsonl"))]
    twin_of = {}
    for k, n in enumerate(added):
        original = by_key[n["key"][len("twin-"):]]["id"]
        twin_of[original] = len(items) + k

    # Test requests (ABXI split: the history is every interaction but the last, the last 50 of
    # them) whose target is a held-out item.
    seqs = {}
    with open(os.path.join(DATA, "food-kitchen.inter"), encoding="utf-8") as f:
        next(f)
        for line in f:
            u, it, _ = line.rstrip("\n").split("\t")
            seqs.setdefault(u, []).append(by_key[it]["id"])
    requests = [(u, s[:-1][-50:], s[-1]) for u, s in seqs.items() if s[-1] in held_set]
    requests = requests[: a.users]

    worst_diff, worst_between, n = 0.0, 0, 0
    for _, history, _ in requests:
        out = subprocess.run(
            [a.bin, "recommend", "--model", a.model, "--history", ",".join(map(str, history)),
             "--domain", domain, "-k", "1000000", "--json"],
            check=True, capture_output=True, text=True).stdout
        recs = json.loads(out)
        score = {r["item"]: r["score"] for r in recs}
        ordered = sorted(score.values())
        for original in held:
            if original in history:
                continue
            s1, s2 = sorted((score[original], score[twin_of[original]]))
            worst_diff = max(worst_diff, s2 - s1)
            # items other than the pair scoring strictly between the two: how far apart their
            # ranks are
            between = bisect.bisect_left(ordered, s2) - bisect.bisect_right(ordered, s1)
            worst_between = max(worst_between, between)
            n += 1
    print(json.dumps({
        "requests": len(requests),
        "held_out_items": len(held),
        "pairs_compared": n,
        "max_abs_score_difference": worst_diff,
        "max_items_ranked_between_a_pair": worst_between,
    }, indent=1))


if __name__ == "__main__":
    main()
