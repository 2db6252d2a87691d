#!/usr/bin/env bash
# Seeds fuzz/corpus/loader/ with real compose files: the awesome-compose
# corpus in ../shared/corpus (beside the repository) and the example stacks
# in stacks/. Files already there (found by earlier runs) are kept.
# fuzz/corpus is not committed (.gitignore): this makes it at run time.
set -euo pipefail
fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$fuzz_dir")"
dest="$fuzz_dir/corpus/loader"
mkdir -p "$dest"
n=0
shopt -s nullglob
for f in "$root"/../shared/corpus/awesome-compose/*.yaml; do
    cp "$f" "$dest/seed-awesome-$(basename "$f")"
    n=$((n + 1))
done
for f in "$root"/stacks/*.yml; do
    cp "$f" "$dest/seed-stacks-$(basename "$f")"
    n=$((n + 1))
done
# Merge and .env seeds, in the target's format (parts split at NUL bytes:
# stack file, .env, further stack files): each awesome-compose file with the
# next one merged over it, and the example stack with a .env file.
awesome=("$root"/../shared/corpus/awesome-compose/*.yaml)
for ((i = 0; i + 1 < ${#awesome[@]}; i++)); do
    { cat "${awesome[i]}"; printf '\0\0'; cat "${awesome[i + 1]}"; } >"$dest/seed-merge-$i"
    n=$((n + 1))
done
for f in "$root"/stacks/*.yml; do
    { cat "$f"; printf '\0TAG=1.27\nN=${A:-3}\n'; } >"$dest/seed-env-$(basename "$f")"
    n=$((n + 1))
done
if [ "$n" -eq 0 ]; then
    echo "seed.sh: no seed files found (is ../shared/corpus there?)" >&2
    exit 1
fi
echo "seed.sh: $n seed files in $dest ($(find "$dest" -type f | wc -l) files in all)"
