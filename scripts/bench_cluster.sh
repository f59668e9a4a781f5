#!/usr/bin/env bash
# `make bench`'s cluster benchmark (#27): the operator at scale on the real control plane.
# Starts scripts/cluster.sh with KWOK's fake nodes (built on demand: scripts/k8s_tools.sh --with
# kwok), the operator (release build) and reads in the audit log; runs `orchestra bench-cluster`;
# stops the cluster; then puts the same sweep through the mock API server of the reconcile tests
# (operator/tests/fake_api_scale.rs) for comparison. Results: bench-results/cluster.{json,md},
# the plots bench-results/cluster-{running,finished}.{svg,png}, and
# bench-results/cluster-fake-api.{json,md}.
#
# Settings (environment): BENCH_CLUSTER_EXPERIMENTS (10), BENCH_CLUSTER_TRIALS (per Experiment,
# 1000), BENCH_CLUSTER_PARALLELISM (per Experiment, 100), BENCH_CLUSTER_POD_S (how long each
# fake pod runs, 150: long enough for 1,000 to run at once while the API server starts them), BENCH_CLUSTER_OUT (bench-results/cluster), BENCH_CLUSTER_TIMEOUT_S (3600), BENCH_CLUSTER_CLIENT_QPS (the controller manager's and the
# scheduler's client rate limit, 5000; their defaults are 20 and 50).
set -euo pipefail
cd "$(dirname "$0")/.."
# (make bench has done this already; run by hand, the mock API sweep below needs it too.)
# shellcheck source=scripts/env.sh
. scripts/env.sh
experiments=${BENCH_CLUSTER_EXPERIMENTS:-10}
trials=${BENCH_CLUSTER_TRIALS:-1000}
parallelism=${BENCH_CLUSTER_PARALLELISM:-100}
pod_s=${BENCH_CLUSTER_POD_S:-150}
out=${BENCH_CLUSTER_OUT:-bench-results/cluster}
bin="${CARGO_TARGET_DIR:-$HOME/.cache/orchestra/target}/release"
[ -x "$bin/orchestra" ] && [ -x "$bin/orchestra-operator" ] ||
    { echo "bench-cluster: build first (make build, or cargo build --release -p orchestra-operator)" >&2; exit 1; }

scripts/k8s_tools.sh --with kwok >/dev/null
# Room for every running pod: 110 per node (the kubelet's default) and one node spare.
running=$((experiments * parallelism))
nodes=$(((running + 109) / 110 + 1))
dir=$(mktemp -d "${TMPDIR:-/tmp}/orchestra-bench-cluster.XXXXXX")
store="$dir/store"
trap 'scripts/cluster.sh down "$dir" >/dev/null 2>&1 || true' EXIT
# The controller manager's and the scheduler's client rate limits lifted, as kwokctl does for
# scale tests (at kube-controller-manager's default of 20 requests a second the Job controller
# starts about three trials a second, whoever asks): what is measured is ours.
CLUSTER_KWOK_NODES=$nodes CLUSTER_KWOK_POD_S=$pod_s CLUSTER_OPERATOR=1 CLUSTER_AUDIT_READS=1 \
    CLUSTER_CLIENT_QPS=${BENCH_CLUSTER_CLIENT_QPS:-5000} \
    CLUSTER_OWNER_PID=$$ scripts/cluster.sh up "$dir"
echo "bench-cluster: $experiments Experiments x $trials trials, $parallelism at a time each, pods run ${pod_s} s (cluster: $dir)"
"$bin/orchestra" bench-cluster --cluster "$dir" --experiments "$experiments" --trials "$trials" \
    --parallelism "$parallelism" --store "$store" --timeout-s "${BENCH_CLUSTER_TIMEOUT_S:-3600}" --out "$out"
scripts/cluster.sh down "$dir" >/dev/null 2>&1

echo
echo "bench-cluster: the same sweep through the mock API server (operator/tests/fake_api_scale.rs), for comparison:"
BENCH_CLUSTER_EXPERIMENTS=$experiments BENCH_CLUSTER_TRIALS=$trials BENCH_CLUSTER_PARALLELISM=$parallelism \
    BENCH_CLUSTER_FAKE_OUT="$(realpath -m "$out")-fake-api" \
    cargo test --workspace ${ORCHESTRA_FEATURES:-} --test fake_api_scale -- --ignored --nocapture 2>&1 |
    grep -v -E '^(running 1 test|test result|test the_|\s*(Compiling|Finished|Running))' || true
echo "written: $out-fake-api.json and $out-fake-api.md"
