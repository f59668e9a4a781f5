#!/usr/bin/env bash
# What the edge costs a hospital gateway: the stripped size of orchestra-edge, the shared
# libraries it loads (no libtorch may be among them), and its peak memory (max RSS) while
# encoding 16 images, with every core and on one thread.
# Usage: scripts/edge_footprint.sh BINARY_DIR MODEL OUT.json [DATASET]
# (BINARY_DIR holds orchestra-edge and orchestra-worker; the worker writes the sample images.)
set -euo pipefail
bins=$1 model=$2 out=$3
dataset="${4:-synthetic://lesion?n=64&size=128&seed=1&val=16}"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
edge="$bins/orchestra-edge"
cp "$edge" "$dir/orchestra-edge"
strip "$dir/orchestra-edge"
size=$(stat -c %s "$dir/orchestra-edge")
libs=$(ldd "$edge" | awk '{print $1}' | tr '\n' ' ')
if ldd "$edge" | grep -qi torch; then
    echo "orchestra-edge links libtorch: $libs" >&2
    exit 1
fi
side=$(sed -n 's/.*[?&]size=\([0-9]*\).*/\1/p' <<< "$dataset")
"$bins/orchestra-worker" samples --dataset "$dataset" --size "${side:-128}" --count 16 -o "$dir/images" > /dev/null
peak() { /usr/bin/time -f %M "$@" "$edge" encode --model "$model" --out-dir "$dir/streams" "$dir"/images/*.png 2>&1 >/dev/null | tail -1; }
rss_all=$(peak env)
rss_one=$(peak env ORCHESTRA_EDGE_THREADS=1)
echo "orchestra-edge: $(awk "BEGIN {printf \"%.1f\", $size / 1e6}") MB stripped, no libtorch (loads: $libs)"
echo "peak memory encoding 16 images: ${rss_all} kB (every core), ${rss_one} kB (one thread)"
cat > "$out" <<JSON
{"strippedBytes": $size, "sharedLibraries": "$libs", "peakRssKbAllCores": $rss_all, "peakRssKbOneThread": $rss_one, "images": 16, "dataset": "$dataset"}
JSON
echo "written: $out"
