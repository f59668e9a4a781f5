#!/usr/bin/env bash
# The tests whose assertions depend on what a short training run learned (training, codec,
# baselines, service fixtures) or on float equivalence (data-parallel ranks against
# micro-batches), again under libtorch's other CPU kernel paths. What a few dozen steps learn
# differs between AVX-512, AVX2 and the plain kernels and between thread counts, so a test that
# only holds on the developer's CPU fails here first instead of on a user's machine.
#
# `make test` has already run them with the machine's own dispatch and every core. This adds:
#   - AVX2 kernels, where the CPU has AVX-512 (an AVX2-only machine's path);
#   - the plain (non-vectorised) kernels on one thread, everywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

tests=(--test training --test codec --test baselines --test serve)
runs=()
if grep -qw avx512f /proc/cpuinfo; then
    runs+=("ATEN_CPU_CAPABILITY=avx2")
fi
runs+=("ATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=1")

for run in "${runs[@]}"; do
    echo "test: training-dependent tests again with $run"
    env $run cargo test -p orchestra-worker $ORCHESTRA_WORKER_FEATURES "${tests[@]}" --no-fail-fast
    # Data-parallel equivalence (N ranks = one process with N micro-batches) on the same path.
    env $run cargo test -p orchestra-worker $ORCHESTRA_WORKER_FEATURES --test data_parallel \
        -- train_like_one_process_with_twice_the_batch
done
