#!/usr/bin/env bash
# GPU check for a machine with an NVIDIA GPU, PyTorch 2.11 (CUDA 13) and libnccl, but no Rust:
# build here with `cargo build --release -p orchestra-worker --features nccl`, copy the binary
# there, and run `scripts/gpu_check.sh <binary> <out-dir>`. It measures
#   1. NCCL all-reduce at world size 1 (the rendezvous, the unique id, the collective path);
#   2. training throughput of D1-D4 with the paper preset on the GPU, every gradient averaged
#      through NCCL (world size 1), and the same step in PyTorch eager on the same GPU, in two
#      alternating rounds at fp32 and at bf16 autocast;
#   2b. N = 1, 2, 4 D4 trials packed on the GPU as separate processes: summed images/s and
#      peak GPU memory (what `trialsPerGpu` would deliver);
#   3. the same D4 step on the machine's CPUs, for the GPU/CPU ratio;
#   4. a whole short D4 trial on the GPU through `train` (checkpoints, evaluation, real bpp).
# Every step has its own time limit, so one failure does not hide the others. ROUNDS (default
# "1 2") names the rounds of 2. to run; CPU=0 leaves out 3.
set -u
bin="${1:?usage: gpu_check.sh <orchestra-worker built with --features nccl> <out-dir>}"
out="${2:?usage: gpu_check.sh <binary> <out-dir>}"
mkdir -p "$out"
py="${PYTHON:-python3}"
torch_lib="$("$py" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
# The NCCL that libtorch_cuda itself loads: a second, different libnccl in the process breaks
# both (the worker checks and says so).
nccl_so="$(ldd "$torch_lib/libtorch_cuda.so" | awk '/libnccl/ {print $3; exit}')"
[ -n "$nccl_so" ] || nccl_so="$(find "$torch_lib/../.." -name 'libnccl.so.2*' 2>/dev/null | head -1)"
echo "torch lib: $torch_lib"; echo "nccl: ${nccl_so:-not found}"
# cudarc opens libnccl.so by that name: give the versioned library one.
mkdir -p /tmp/orchestra-nccl && ln -sf "$nccl_so" /tmp/orchestra-nccl/libnccl.so
export LD_LIBRARY_PATH="/tmp/orchestra-nccl:$torch_lib:${LD_LIBRARY_PATH:-}"
export MASTER_ADDR=127.0.0.1 MASTER_PORT=29517 WORLD_SIZE=1 RANK=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
nproc

step() { echo; echo "== $1"; shift; timeout "$@"; echo "(exit $?)"; }

step "NCCL all-reduce, world size 1" 45 "$bin" bench-allreduce --device cuda --dist nccl \
    --sizes-mib 1,4,16,64 --iters 20 --out "$out/allreduce-nccl.json"
# Worker and PyTorch eager alternate (worker, PyTorch, worker, PyTorch) at fp32 and at bf16, so
# that a drift of the machine shows as a difference between rounds, not between frameworks.
for round in ${ROUNDS:-1 2}; do
    for precision in fp32 bf16; do
        step "round $round: worker D1-D4, paper preset, 128 px, batch 16, $precision, GPU through NCCL" 150 \
            "$bin" bench --preset paper --size 128 --batch 16 --steps 50 --device cuda --dist nccl \
            --precision "$precision" --out "$out/worker-gpu-$precision-$round.json"
        # One interpreter for the four variants (importing torch takes seconds).
        step "round $round: PyTorch eager D1-D4, paper preset, $precision, GPU" 150 "$py" -c '
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("reference", "scripts/pytorch_reference.py")
ref = importlib.util.module_from_spec(spec); spec.loader.exec_module(ref)
with open(sys.argv[1], "a") as f:
    for v in ["D1", "D2", "D3", "D4"]:
        m = ref.measure(v, 128, 16, 50, "paper", "cuda", precision=sys.argv[2])
        m["round"] = int(sys.argv[3])
        print(json.dumps(m), flush=True); f.write(json.dumps(m) + "\n")
' "$out/pytorch-gpu.jsonl" "$precision" "$round"
    done
done
# Packing: N D4 trials as separate processes on the one GPU, started together; the packed
# images/s is the sum of theirs (each prints its own measurement). Peak GPU memory is sampled.
for n in 1 2 4; do
    echo; echo "== $n D4 processes packed on the GPU (paper preset, fp32)"
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$out/packed-$n-memory.txt" &
    smi=$!
    pids=()
    for i in $(seq 1 "$n"); do
        MASTER_PORT=$((29600 + i)) timeout 150 "$bin" bench --variant D4 --preset paper --size 128 \
            --batch 16 --steps 100 --device cuda --dist single > "$out/packed-$n-$i.json" &
        pids+=("$!")
    done
    wait "${pids[@]}"
    kill "$smi" 2>/dev/null
    "$py" - "$out" "$n" <<'PY'
import glob, json, sys
out, n = sys.argv[1], int(sys.argv[2])
rows = [json.loads(open(f).read().strip() or "null") for f in sorted(glob.glob(f"{out}/packed-{n}-*.json"))]
rows = [r for r in rows if r]
mem = [int(x) for x in open(f"{out}/packed-{n}-memory.txt").read().split() if x.isdigit()]
total = sum(r["images_per_second"] for r in rows)
print(f"packed {n}: {len(rows)} finished, {total:.1f} images/s in all, peak GPU memory {max(mem or [0])} MiB")
PY
done
[ "${CPU:-1}" = 1 ] && step "worker D4, paper preset, CPU ($(nproc) threads)" 60 "$bin" bench --variant D4 --preset paper \
    --size 128 --batch 16 --steps 4 --device cpu --dist single
[ "${CPU:-1}" = 1 ] && step "PyTorch eager D4, paper preset, CPU" 60 "$py" scripts/pytorch_reference.py --variant D4 \
    --preset paper --size 128 --batch 16 --steps 4 --device cpu --jsonl "$out/pytorch-cpu.jsonl"
cat > /tmp/orchestra-gpu-trial.yaml <<YAML
experiment: gpu-check
trial: d4-paper-nccl
variant: D4
dataset: synthetic://lesion?n=960&size=128&seed=7&val=96
model: { preset: paper, inputSize: 128 }
hyper: { batchSize: 16, lr: 0.0005, lrCritic: 0.0005, lambdaRate: 0.05, disWarmupSteps: 200 }
steps: 1000
seed: 1
worldSize: 1
store: file:///tmp/orchestra-gpu-runs
checkpointEvery: 250
evalEvery: 500
device: cuda
YAML
rm -rf /tmp/orchestra-gpu-runs
step "a whole D4 trial (paper preset, 1000 steps) on the GPU through NCCL" 120 "$bin" train \
    --spec /tmp/orchestra-gpu-trial.yaml --dist nccl --no-progress
cp /tmp/orchestra-gpu-runs/gpu-check/d4-paper-nccl/result.json "$out/gpu-trial-result.json" 2>/dev/null
cp /tmp/orchestra-gpu-runs/gpu-check/d4-paper-nccl/metrics.jsonl "$out/gpu-trial-metrics.jsonl" 2>/dev/null
echo done
