#!/usr/bin/env bash
# `make demo`: trains one D4 trial (compressor + segmentor + critic + rate loss) on synthetic
# dermoscopy-like data on the CPU and prints Dice, IoU and the estimated bits per pixel.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="$PWD/runs/demo"
spec="$runs/trial.yaml"
mkdir -p "$runs"
# The committed spec writes to /tmp; the demo keeps its store under runs/ in the clone.
sed "s#^store: .*#store: file://$runs/store#" experiments/demo-trial.yaml > "$spec"
worker="$CARGO_TARGET_DIR/release/orchestra-worker"
"$worker" info --preset small --size 128
# Running the demo again continues (or reports) the same trial instead of failing.
"$worker" train --resume --spec "$spec"
echo "metrics: $runs/store/demo/d4-synthetic/metrics.jsonl"
