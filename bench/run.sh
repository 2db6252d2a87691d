#!/usr/bin/env bash
# Runs a benchmark and writes its results into docs/benchmarks.md.
#   bash bench/run.sh deploy [stackd-bench options]
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-deploy}; shift || true
cargo build --release --quiet -p stackd -p stackd-cli -p stackd-bench
case "$what" in
  deploy) exec target/release/stackd-bench "$@" ;;
  *) echo "unknown benchmark $what (known: deploy)" >&2; exit 1 ;;
esac
