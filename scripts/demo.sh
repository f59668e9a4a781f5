#!/usr/bin/env bash
# `make demo`: the quickstart sweep on this machine. D1-D4 on synthetic dermoscopy-like data,
# two rate weights for D4, as worker processes on the CPU; ends with the leaderboard and its
# plot. Interrupt it and run it again: it continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$CARGO_TARGET_DIR/release"
"$bin/orchestra" run experiments/quickstart.yaml \
    --workdir runs/quickstart \
    --store "file://$PWD/runs/store" \
    --worker "$bin/orchestra-worker"
