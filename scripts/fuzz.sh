#!/usr/bin/env bash
# `make fuzz`: ten million generated inputs (random bytes, random payloads behind a valid
# header, crafted headers announcing large shapes, mutations and truncations of real streams) through the bitstream decoder of the demo's D4 model.
set -euo pipefail
cd "$(dirname "$0")/.."
spec=runs/quickstart/trials/quickstart-d4-000.yaml
if [ ! -f "$spec" ]; then
    echo "fuzz: $spec is missing; run 'make demo' first to train the model" >&2
    exit 1
fi
w="$CARGO_TARGET_DIR/release/orchestra-worker"
mkdir -p runs/fuzz
"$w" export --spec "$spec" -o runs/fuzz/model.safetensors
# The streams to mutate come from the worker's synthetic generator (8 images).
"$w" fuzz-decoder --model runs/fuzz/model.safetensors --synthetic 8 --inputs "${FUZZ_INPUTS:-10000000}"
