#!/usr/bin/env bash
# `make bench`: training throughput and peak memory per variant (small preset, 128px, batch 8,
# CPU; and volumes: 32 x 64 x 64 patches, batch 2), the same step in PyTorch eager for comparison, all-reduce and data-parallel figures, the
# planner at 10,000 trials, the operator with 10,000 trials on the real control plane
# (scripts/bench_cluster.sh; BENCH_CLUSTER=0 skips it), the search algorithms on recorded learning curves, the latency table (the paper's Table 2) and the service's load test.
# Results are printed and written under bench-results/. BENCH_PYTORCH=0 skips the PyTorch
# reference (it needs the full torch wheel with its CUDA dependencies, about 4.6 GB, installed
# once into ~/.cache/orchestra/venv-pyref).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$CARGO_TARGET_DIR/release"
mkdir -p bench-results
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GB"
echo
echo "orchestra-worker (tch, libtorch 2.11):"
"$bin/orchestra-worker" bench --preset small --size 128 --batch 8 --steps 30 --out bench-results/worker-train-small.json
echo
echo "orchestra-worker, bf16 autocast (hyper.precision: bf16):"
"$bin/orchestra-worker" bench --preset small --size 128 --batch 8 --steps 30 --precision bf16 \
    --out bench-results/worker-train-small-bf16.json

if [ "${BENCH_PYTORCH:-1}" != 0 ]; then
    ref="$HOME/.cache/orchestra/venv-pyref"
    if [ ! -x "$ref/bin/python" ] || ! "$ref/bin/python" -c "import torch" 2>/dev/null; then
        echo "installing the PyTorch reference environment into $ref (about 4.6 GB)"
        python3 -m venv "$ref"
        "$ref/bin/pip" install -q torch==2.11.0 numpy
    fi
    echo
    echo "PyTorch eager, same networks and step:"
    out=bench-results/pytorch-train-small.jsonl
    : > "$out"
    echo "| variant | images/s | ms/step | peak RSS (MB) |"
    echo "|---|---|---|---|"
    for v in D1 D2 D3 D4; do
        "$ref/bin/python" scripts/pytorch_reference.py --variant "$v" --size 128 --batch 8 --steps 30 --jsonl "$out"
    done
    echo "written: $out"
    echo
    echo "PyTorch eager, bf16 autocast:"
    out=bench-results/pytorch-train-small-bf16.jsonl
    : > "$out"
    echo "| variant | images/s | ms/step | peak RSS (MB) |"
    echo "|---|---|---|---|"
    for v in D1 D2 D3 D4; do
        "$ref/bin/python" scripts/pytorch_reference.py --variant "$v" --size 128 --batch 8 --steps 30 \
            --precision bf16 --jsonl "$out"
    done
    echo "written: $out"
fi

echo
echo "volumes: orchestra-worker, 3D networks (3D U-Net as s), 32 x 64 x 64 patches:"
"$bin/orchestra-worker" bench --dims 3 --patch 32,64,64 --preset small --batch 2 --steps 10 \
    --out bench-results/worker-train-3d-small.json
if [ "${BENCH_PYTORCH:-1}" != 0 ]; then
    echo
    echo "PyTorch eager, same 3D networks and step:"
    out=bench-results/pytorch-train-3d-small.jsonl
    : > "$out"
    echo "| variant | patches/s | ms/step | peak RSS (MB) |"
    echo "|---|---|---|---|"
    for v in D1 D2 D3 D4; do
        "$ref/bin/python" scripts/pytorch_reference.py --variant "$v" --patch 32,64,64 --batch 2 --steps 10 --jsonl "$out"
    done
    echo "written: $out"
fi

echo
if command -v mpirun >/dev/null && [[ "${ORCHESTRA_FEATURES:-}" == *mpi* ]]; then
    echo "all-reduce throughput, 2 CPU ranks (Open MPI):"
    mpirun -n 2 --oversubscribe "$bin/orchestra-worker" bench-allreduce --dist mpi \
        --sizes-mib 1,2,4,8,16,32,64 --iters 10 --out bench-results/allreduce-mpi.json
    echo
    echo "share of the step spent in communication, D4, 2 CPU ranks x 1 thread:"
    out=bench-results/data-parallel.jsonl
    : > "$out"
    for preset in small paper; do
        ORCHESTRA_THREADS=1 mpirun -n 2 --oversubscribe "$bin/orchestra-worker" bench --variant D4 \
            --preset "$preset" --size 128 --batch 4 --steps 5 --dist mpi | tee -a "$out"
    done
    echo "written: $out"
else
    echo "all-reduce: skipped (mpirun missing, or the worker was built without the mpi feature)"
fi

echo
echo "planner and leaderboard at 10,000 trials:"
"$bin/orchestra" bench-planner --trials 10000 --out bench-results/planner.json

echo
if [ "${BENCH_CLUSTER:-1}" != 0 ]; then
    echo "the operator at scale on the real control plane (10 Experiments x 1,000 trials on KWOK nodes; about 40 minutes; BENCH_CLUSTER=0 skips it):"
    scripts/bench_cluster.sh
else
    echo "cluster benchmark: skipped (BENCH_CLUSTER=0)"
fi

echo
# Each recording holds 32 real trials; docs/results/2026-11-30-search.md says how each was made.
for name in search-curves search-curves-2 search-curves-3 search-curves-long; do
    echo "search algorithms replayed on the recorded curves of docs/results/$name.json:"
    "$bin/orchestra" bench-search --curves "docs/results/$name.json" --seeds 20 --out "bench-results/${name/curves/bench}"
done

echo
spec=runs/quickstart/trials/quickstart-d4-000.yaml
d1=runs/quickstart/trials/quickstart-d1-000.yaml
if [ -f "$spec" ]; then
    mkdir -p runs/bench
    "$bin/orchestra-worker" export --spec "$spec" -o runs/bench/model.safetensors >/dev/null
    echo "latency from the edge to the label map (the paper's Table 2), demo models:"
    d1_args=()
    if [ -f "$d1" ]; then d1_args=(--d1 "$d1"); fi
    for size in 128 256; do
        "$bin/orchestra-worker" bench-latency --model runs/bench/model.safetensors "${d1_args[@]}" \
            --size "$size" --out "bench-results/latency-$size.json"
        echo
    done

    echo "the edge (orchestra-edge, C in pure Rust) against libtorch's C, demo held-out split, one core:"
    dataset=$(sed -n 's/^dataset: *//p' "$spec")
    one_core=()
    if command -v taskset >/dev/null; then one_core=(taskset -c 0); fi
    "${one_core[@]}" "$bin/orchestra-worker" compare-edge --model runs/bench/model.safetensors \
        --dataset "$dataset" --out bench-results/edge-compare.json
    scripts/edge_footprint.sh "$bin" runs/bench/model.safetensors bench-results/edge-footprint.json
    echo

    echo "segmentation service under load (loopback, TLS, demo D4 model, edge client, 400 requests per line):"
    scripts/load_test.sh "$bin" runs/bench/model.safetensors bench-results/load-test.jsonl
else
    echo "codec latency and load test: skipped ($spec is missing: run 'make demo' first to train the model)"
fi

echo
ct_d4=runs/mmwhs-ct/trials/mmwhs-ct-d4-000.yaml
ct_d1=runs/mmwhs-ct/trials/mmwhs-ct-d1-000.yaml
ct_scan=../shared/data/mmwhs_ct/ct_train_1010_image.nii.gz
if [ -f "$ct_d4" ] && [ -f "$ct_scan" ]; then
    echo "latency of a whole CT scan from the edge to the label volume (Table 2 at volume scale):"
    mkdir -p runs/bench
    "$bin/orchestra-worker" export --spec "$ct_d4" -o runs/bench/ct-d4.safetensors >/dev/null
    d1_args=()
    if [ -f "$ct_d1" ]; then d1_args=(--d1 "$ct_d1"); fi
    # The cloud's g + s beside PyTorch eager's on the same code (the reference environment
    # installed above), and every run's Dice against the CT's ground truth.
    pytorch_args=()
    if [ "${BENCH_PYTORCH:-1}" != 0 ]; then
        pytorch_args=(--pytorch scripts/pytorch_sliding_window.py --python "$HOME/.cache/orchestra/venv-pyref/bin/python")
    fi
    "$bin/orchestra-worker" bench-latency-volume --model runs/bench/ct-d4.safetensors --scan "$ct_scan" \
        --truth "${ct_scan/_image/_label}" "${d1_args[@]}" "${pytorch_args[@]}" --out bench-results/latency-ct.json
    echo "the edge's C over the whole CT, plane by plane on the direct kernels, per layer against the measured FMA peak,"
    echo "and the tiled unfold path beside it:"
    "$bin/orchestra-edge" bench-volume --model runs/bench/ct-d4.safetensors --scan "$ct_scan" --tiles \
        --out bench-results/edge-volume-ct.json
    echo "the edge's C against libtorch's on the whole CT:"
    "$bin/orchestra-worker" compare-edge-volume --model runs/bench/ct-d4.safetensors "$ct_scan" \
        --out bench-results/edge-compare-ct.json
else
    echo "CT latency: skipped (train experiments/mmwhs-ct.yaml first; it needs ../shared/data/mmwhs_ct)"
fi
