#!/usr/bin/env bash
# Cold release build time and crate count of the lean library (what a service depends on)
# against the full default build (the `llm-emf` tool and everything it runs), each in a fresh
# target directory, one after the other. Needs the machine otherwise idle (it says so when the
# load average is above 0.5) and about 45 minutes on 2 cores.
#
# Usage: scripts/build-times.sh            (writes target/build-times.md and prints it)
set -euo pipefail
cd "$(dirname "$0")/.."
load=$(cut -d' ' -f1 /proc/loadavg)
if python3 -c "import sys; sys.exit(0 if float('$load') > 0.5 else 1)" && [ -z "${FORCE:-}" ]; then
    echo "the machine is busy (one-minute load $load): build times need it idle; set FORCE=1 to measure anyway" >&2
    exit 3
fi
cargo fetch --quiet
out=target/build-times.md
mkdir -p target
{
    echo "| build | crates (cargo tree -e normal,build) | cold release build (s) |"
    echo "| --- | --- | --- |"
} > "$out"
for spec in "lean|--no-default-features --features flex --lib" "full|--bins --lib"; do
    name=${spec%%|*}
    args=${spec#*|}
    tree_args=${args/--lib/}
    tree_args=${tree_args/--bins/}
    # shellcheck disable=SC2086
    crates=$(cargo tree $tree_args -e normal,build --prefix none | sed 's/ (\*)//; s/ (proc-macro)//' | sort -u | wc -l)
    dir=$(mktemp -d)
    start=$(date +%s)
    # shellcheck disable=SC2086
    CARGO_TARGET_DIR=$dir cargo build --release --quiet $args
    secs=$(( $(date +%s) - start ))
    rm -rf "$dir"
    echo "| $name (\`cargo build --release $args\`) | $crates | $secs |" >> "$out"
done
cat "$out"
