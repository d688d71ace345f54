#!/usr/bin/env python3
"""Prints the per-phase profile of training runs (`llm-emf train --profile`) as a markdown table.

Usage: python3 scripts/profile_table.py LABEL=RUN_DIR_OR_LOG.jsonl ...
Each log's first epoch is read: seconds per phase over the epoch, their share, and the
training throughput (sequences/s) and padding of that epoch.
"""
import json
import os
import sys

PHASES = ["batching", "encoders_forward", "heads_and_loss", "backward", "optimizer"]


def first_epoch(path):
    if os.path.isdir(path):
        path = os.path.join(path, "log.jsonl")
    with open(path, encoding="utf-8") as f:
        return json.loads(f.readline())


def main(args):
    if not args:
        sys.exit(__doc__)
    print("| run | " + " | ".join(p.replace("_", " ") for p in PHASES)
          + " | step total | training seq/s | padding |")
    print("| --- " * (len(PHASES) + 4) + "|")
    for arg in args:
        label, _, path = arg.partition("=")
        log = first_epoch(path)
        prof = log["profile"]
        total = sum(prof[p] for p in PHASES)
        cells = [f"{prof[p]:.2f} s ({100 * prof[p] / total:.0f}%)" for p in PHASES]
        print(f"| {label} | " + " | ".join(cells)
              + f" | {total:.1f} s / {prof['steps']} steps | {log['train_sequences_per_second']:.1f}"
              + f" | {log.get('padding') or float('nan'):.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
