#!/usr/bin/env python3
"""Prints markdown tables from llm-emf run folders, so that docs/results.md quotes measured
numbers only: test metrics (results.json) and throughput (log.jsonl, results.json).

usage: scripts/results_table.py [--machine NAME] LABEL=RUN_DIR [LABEL=RUN_DIR ...]
"""
import json
import sys
from pathlib import Path


def load(run):
    run = Path(run)
    results = json.loads((run / "results.json").read_text())
    config = json.loads((run / "config.json").read_text())
    log = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines() if l.strip()]
    return results, config, log


def main(args):
    machine = "release build, this machine"
    if args and args[0] == "--machine":
        machine, args = f"release build, {args[1]}", args[2:]
    runs = []
    for arg in args:
        label, _, path = arg.partition("=")
        runs.append((label, *load(path)))
    first = runs[0][1]["test"]
    print(f"Test split, {first['protocol']} protocol (negatives seed {first['seed']}), metrics in %.\n")
    print("| model | domain | MRR | NDCG@5 | NDCG@10 | HR@1 | HR@5 | HR@10 | n | best epoch / epochs run |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    domains = list(first["domains"].keys())
    for d in domains:
        for label, res, _, _ in runs:
            m = res["test"]["domains"][d]
            print(
                f"| {label} | {d} | {100*m['mrr']:.2f} | {100*m['ndcg5']:.2f} | {100*m['ndcg10']:.2f} "
                f"| {100*m['hr1']:.2f} | {100*m['hr5']:.2f} | {100*m['hr10']:.2f} | {m['n']} "
                f"| {res['best_epoch']} / {res['epochs']} |"
            )
    print(f"\nThroughput ({machine}):\n")
    print("| model | parameters | training sequences/s (mean over epochs) | seconds per epoch (mean) | evaluation examples/s (test) |")
    print("| --- | --- | --- | --- | --- |")
    for label, res, _, log in runs:
        secs = sum(l["train_seconds"] for l in log) / len(log)
        print(
            f"| {label} | {res['parameters']} | {res['train_sequences_per_second']:.1f} | {secs:.1f} "
            f"| {res['test']['examples_per_second']:.1f} |"
        )


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1:])
