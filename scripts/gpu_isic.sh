#!/usr/bin/env bash
# The paper's bar on real data, on a GPU machine: D1 and two D4 rate weights trained on ISIC
# 2017 (the last 200 ids held out) at 128x128 with the paper preset, about a minute each, then
# `rate-accuracy` on the held-out images: JPEG, JPEG-2000 and H.264 intra swept and Auto/Seg
# trained, all segmented by the D1 model, the D4 models measured on their real bitstreams.
#   scripts/gpu_isic.sh <orchestra-worker> <folder holding isic2017/train> <out-dir>
# Then the recipe of docs/results/2026-12-04-d4-gap.md: D4 warm-started from the finished D1 and
# distilled from its predictions, at the same two rate weights, and with the rate warm-up (lambda
# ramped over the first half of the steps) at 0.05 and 0.1 (RECIPE=0 leaves it out).
# STEPS, DEVICE and LIMIT (a dataset id limit) override the defaults for a dry run on a CPU;
# TRIALS picks a subset of the first trainings (isic-d1 must be among them), RECIPES of the
# recipe's; AUTOSEG_STEPS (default STEPS, 0 leaves it out) trains the Auto/Seg baseline.
set -u
bin="$(realpath "${1:?usage: gpu_isic.sh <binary> <data-dir> <out-dir>}")"
data="$(realpath "${2:?usage: gpu_isic.sh <binary> <data-dir> <out-dir>}")"
out="${3:?usage: gpu_isic.sh <binary> <data-dir> <out-dir>}"
steps="${STEPS:-1500}"
device="${DEVICE:-cuda}"
limit="${LIMIT:+&limit=$LIMIT}"
val="${VAL:-200}"
mkdir -p "$out"
runs="$(mktemp -d)"
if [ "$device" = cuda ]; then
    torch_lib="$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
    export LD_LIBRARY_PATH="$torch_lib:${LD_LIBRARY_PATH:-}"
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
fi

spec() { # name variant lambda [extra hyper fields]
    cat > "$runs/$1.yaml" <<YAML
experiment: isic
trial: $1
variant: $2
dataset: file://$data/train?val=$val$limit
model: { preset: paper, inputSize: 128 }
hyper: { batchSize: 16, lr: 0.0005, lrCritic: 0.0005, lambdaRate: $3, disWarmupSteps: 200${4:+, $4} }
steps: $steps
seed: 1
store: file://$runs/store
checkpointEvery: 0
evalEvery: $((steps / 3))
device: $device
YAML
}
spec isic-d1 D1 0.05
spec isic-d4-l05 D4 0.05
spec isic-d4-l2 D4 0.2
teacher="file://$runs/store/isic/isic-d1"
recipe="warmStart: '$teacher', distill: { from: '$teacher', weight: 1.0 }"
spec isic-d4r-l05 D4 0.05 "$recipe"
spec isic-d4r-l2 D4 0.2 "$recipe"
warmup="$recipe, rateWarmupSteps: $((steps / 2))"
spec isic-d4rw-l05 D4 0.05 "$warmup"
spec isic-d4rw-l1 D4 0.1 "$warmup"

train_at_once() { # trial names
    echo "== training $* at once, $steps steps each"
    local pids=()
    for t in "$@"; do
        ORCHESTRA_THREADS=4 timeout 400 "$bin" train --spec "$runs/$t.yaml" --dist single --no-progress \
            > "$out/$t.log" 2>&1 &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || echo "a training run failed (exit $?)"; done
}
trials="${TRIALS:-isic-d1 isic-d4-l05 isic-d4-l2}"
# shellcheck disable=SC2086 # a list of names
train_at_once $trials
# The recipe reads D1's final checkpoint, so its trials start once D1 is done.
if [ "${RECIPE:-1}" = 1 ]; then
    recipes="${RECIPES:-isic-d4r-l05 isic-d4r-l2 isic-d4rw-l05 isic-d4rw-l1}"
    # shellcheck disable=SC2086 # a list of names
    train_at_once $recipes
    trials="$trials $recipes"
fi
models=()
for t in $trials; do
    [ "$t" = isic-d1 ] || models+=("$runs/$t.yaml")
    tail -4 "$out/$t.log"
    cp "$runs/store/isic/$t/result.json" "$out/$t-result.json" 2>/dev/null
    cp "$runs/store/isic/$t/metrics.jsonl" "$out/$t-metrics.jsonl" 2>/dev/null
done

echo "== rate-accuracy on the $val held-out images"
timeout 300 "$bin" rate-accuracy --d1 "$runs/isic-d1.yaml" ${models[@]:+--models "${models[@]}"} \
    --autoseg-steps "${AUTOSEG_STEPS:-$steps}" --out "$out/rate-accuracy"
echo "(exit $?)"
rm -rf "$runs"
