#!/usr/bin/env bash
# `make bench`: training throughput and peak memory per variant (small preset, 128px, batch 8,
# CPU). Results are printed and written under bench-results/.
set -euo pipefail
cd "$(dirname "$0")/.."
worker="$CARGO_TARGET_DIR/release/orchestra-worker"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
"$worker" bench --preset small --size 128 --batch 8 --steps 30 --out bench-results/worker-train-small.json
echo
echo "planner and leaderboard at 10,000 trials:"
"$CARGO_TARGET_DIR/release/orchestra" bench-planner --trials 10000 --out bench-results/planner.json
