#!/usr/bin/env bash
# The cloud side on a GPU, for a machine with an NVIDIA GPU and PyTorch 2.11 (CUDA 13) but no
# Rust: the GPU column of the latency table (the paper's Table 2) and the service's load test
# with g + s on the GPU, without and with batching of concurrent requests.
# Prepare here (after `make demo`): scripts/gpu_serve.sh --prepare .gpu/serve
# Run there:                         scripts/gpu_serve.sh <dir of orchestra-worker and orchestra-edge> .gpu/serve <out-dir>
set -u
if [ "${1:-}" = --prepare ]; then
    dir="${2:?usage: gpu_serve.sh --prepare <dir>}"
    source scripts/env.sh
    mkdir -p "$dir/store"
    "$CARGO_TARGET_DIR/release/orchestra-worker" export --spec runs/quickstart/trials/quickstart-d4-000.yaml \
        -o "$dir/model.safetensors"
    cp runs/quickstart/trials/quickstart-d1-000.yaml "$dir/d1.yaml"
    mkdir -p "$dir/store/quickstart"
    cp -r runs/store/quickstart/quickstart-d1-000 "$dir/store/quickstart/"
    du -sh "$dir"
    exit 0
fi
bins="${1:?usage: gpu_serve.sh <binary dir> <prepared dir> <out-dir>}"
bin="$bins/orchestra-worker"
dir="$(cd "${2:?}" && pwd)"
out="${3:?}"
mkdir -p "$out"
py="${PYTHON:-python3}"
torch_lib="$("$py" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$torch_lib:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
# The D1 checkpoint sits beside the spec here, wherever the directory was copied to.
sed "s|^store: .*|store: file://$dir/store|" "$dir/d1.yaml" > "$dir/d1-here.yaml"

step() { echo; echo "== $1"; shift; timeout "$@"; echo "(exit $?)"; }
for size in 128 256; do
    step "latency table, ${size}x${size}, GPU column" 120 "$bin" bench-latency --gpu on \
        --model "$dir/model.safetensors" --d1 "$dir/d1-here.yaml" --size "$size" --out "$out/latency-gpu-$size.json"
done
step "load test, g + s on the GPU" 240 env BATCHES="1 16 64" CONCURRENCY="1 8 32" \
    scripts/load_test.sh "$bins" "$dir/model.safetensors" "$out/load-test-gpu.jsonl" --device cuda
step "load test, g + s on the CPU (same machine)" 120 env BATCHES="1 16" CONCURRENCY="8" \
    scripts/load_test.sh "$bins" "$dir/model.safetensors" "$out/load-test-cpu.jsonl"
