#!/usr/bin/env bash
# Runs a fuzz target: `bash fuzz/run.sh [TARGET] [SECONDS] [extra libFuzzer args…]`
# (defaults: loader, 60). Seeds the corpus first (fuzz/seed.sh).
#
# The machine has only a stable toolchain, so cargo fuzz runs it with
# RUSTC_BOOTSTRAP=1 (stable rustc accepting the -Z flags cargo fuzz passes).
# AddressSanitizer works too; with debug assertions (-a) integer overflow
# panics, as it would in a debug build. One job, one fuzzing process: the
# machine has 2 cores and is shared.
# Set FUZZ_SANITIZER=none to build without ASan (faster, still coverage-guided).
set -euo pipefail
fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$(dirname "$fuzz_dir")"
target="${1:-loader}"
seconds="${2:-60}"
shift $(( $# < 2 ? $# : 2 ))
sanitizer="${FUZZ_SANITIZER:-address}"

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked -j 1
bash "$fuzz_dir/seed.sh"
mkdir -p "$fuzz_dir/artifacts/$target"

dict=()
[ -f "$fuzz_dir/$target.dict" ] && dict=(-dict="$fuzz_dir/$target.dict")

export RUSTC_BOOTSTRAP=1   # stable rustc, unstable flags allowed
export CARGO_BUILD_JOBS=1  # one rustc at a time (shared 2-core machine)
exec cargo fuzz run "$target" \
    --sanitizer "$sanitizer" --debug-assertions --jobs 1 \
    --fuzz-dir "$fuzz_dir" \
    -- \
    "${dict[@]}" \
    -max_total_time="$seconds" \
    -rss_limit_mb=2048 -timeout=10 \
    -print_final_stats=1 \
    "$@"
