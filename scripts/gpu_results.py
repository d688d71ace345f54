#!/usr/bin/env python3
"""Prints the GPU section of docs/results.md from the logs that scripts/gpu-check.sh wrote
(copied from the device tool's files into run folders), so no number is typed by hand.

usage: scripts/gpu_results.py RUN_DIR [RUN_DIR ...]   (folders holding gpu-check.log etc.)
"""
import json
import re
import sys
from pathlib import Path


def section(log, title):
    """Lines of the step whose header starts with `title`."""
    out, inside = [], False
    for line in log.splitlines():
        if line.startswith("== "):
            inside = line[3:].startswith(title)
            continue
        if inside:
            out.append(line)
    return out


def bench_lines(lines):
    """(name, low, mean, high) from criterion output."""
    rows, name = [], None
    for line in lines:
        if re.match(r"^[\w-]+/[\w-]+$", line.strip()):
            name = line.strip()
        m = re.search(r"time:\s+\[([\d.]+ \w+) ([\d.]+ \w+) ([\d.]+ \w+)\]", line)
        if m and name:
            rows.append((name, *m.groups()))
    return rows


def main(dirs):
    for d in map(Path, dirs):
        log = (d / "gpu-check.log").read_text()
        smi = (d / "nvidia-smi.txt").read_text()
        gpu = re.search(r"\|\s+\d+\s+(NVIDIA [\w ]+?)\s{2,}", smi)
        print(f"### Run `{d.name}` ({gpu.group(1) if gpu else 'GPU'}, wgpu/Vulkan)\n")
        for title in ("unit tests", "tiny CLIP", "training integration"):
            lines = section(log, title)
            results = [l for l in lines if l.startswith("test result:")]
            fails = [l.split()[1] for l in lines if l.startswith("test ") and l.endswith("FAILED")]
            if results:
                print(f"- {title}: `{results[-1]}`" + (f" (failed: {', '.join(fails)})" if fails else ""))
        q = section(log, "quickstart")
        table = [l for l in q if re.match(r"^(model|LLM-EMF|ID-only)", l)]
        wall = [l for l in q if l.startswith("-- exit")]
        if table:
            print("- quickstart (`quickstart --device wgpu`), " + wall[-1].replace("-- ", "") + ":\n")
            print("      " + "\n      ".join(table) + "\n")
        fk = section(log, "Food-Kitchen")
        epoch = [l for l in fk if l.startswith("epoch ")]
        if epoch:
            print(f"- Food-Kitchen LLM-EMF (ID), one epoch: `{epoch[0]}`")
        fk_log = d / "fk-wgpu-log.jsonl"
        if fk_log.exists():
            e = json.loads(fk_log.read_text().splitlines()[0])
            print(f"  ({e['train_sequences_per_second']:.1f} training sequences/s, "
                  f"{e['train_seconds']:.1f} s of training)")
        b = bench_lines(section(log, "frozen encoders"))
        cpu = d / "bench-cpu.log"
        bc = bench_lines(cpu.read_text().splitlines()) if cpu.exists() else []
        if b:
            print("\n| benchmark (criterion, random weights at full size) | wgpu on the GPU: mean [95% interval] | ndarray on the same machine's 16 CPU cores |")
            print("| --- | --- | --- |")
            cpu_by = {r[0]: r for r in bc}
            for name, lo, mean, hi in b:
                c = cpu_by.get(name)
                cs = f"{c[2]} [{c[1]}, {c[3]}]" if c else "-"
                print(f"| {name} | {mean} [{lo}, {hi}] | {cs} |")
        print()


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
