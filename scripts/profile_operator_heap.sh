#!/usr/bin/env bash
# Where the operator's memory goes at scale (#27): the cluster benchmark's setup (the real
# control plane, KWOK's fake nodes, `orchestra bench-cluster`) with the operator run under
# heaptrack, which records every allocation with its call stack. At the end the operator is
# stopped (SIGTERM, as a Deployment's rollout would) so that heaptrack closes its file, and
# heaptrack_print lists the call sites that held the most memory at the heap's peak.
#
# Settings (environment): PROFILE_EXPERIMENTS (3), PROFILE_TRIALS (per Experiment, 1000),
# PROFILE_PARALLELISM (100), PROFILE_POD_S (30), PROFILE_OUT (bench-results/heap): the heaptrack
# file is $PROFILE_OUT.zst (open it with heaptrack_gui for a flame graph), the table
# $PROFILE_OUT.txt, the harness's report $PROFILE_OUT-bench.{json,md}.
# Needs heaptrack (Debian: apt-get install heaptrack) and a release build (make build).
set -euo pipefail
cd "$(dirname "$0")/.."
experiments=${PROFILE_EXPERIMENTS:-3}
trials=${PROFILE_TRIALS:-1000}
parallelism=${PROFILE_PARALLELISM:-100}
pod_s=${PROFILE_POD_S:-30}
out=$(realpath -m "${PROFILE_OUT:-bench-results/heap}")
bin="${CARGO_TARGET_DIR:-$HOME/.cache/orchestra/target}/release"
command -v heaptrack >/dev/null || { echo "profile: heaptrack is missing (apt-get install heaptrack)" >&2; exit 1; }
[ -x "$bin/orchestra" ] && [ -x "$bin/orchestra-operator" ] ||
    { echo "profile: build first (make build)" >&2; exit 1; }
mkdir -p "$(dirname "$out")"

scripts/k8s_tools.sh --with kwok >/dev/null
nodes=$(((experiments * parallelism + 109) / 110 + 1))
dir=$(mktemp -d "${TMPDIR:-/tmp}/orchestra-heap.XXXXXX")
trap 'scripts/cluster.sh down "$dir" >/dev/null 2>&1 || true' EXIT
CLUSTER_KWOK_NODES=$nodes CLUSTER_KWOK_POD_S=$pod_s CLUSTER_CLIENT_QPS=5000 \
    CLUSTER_OWNER_PID=$$ scripts/cluster.sh up "$dir"

# The operator as scripts/cluster.sh starts it (CLUSTER_OPERATOR=1), under heaptrack; its pid
# file names the operator itself, so that the harness reads the operator's RSS, not heaptrack's.
kubectl="$(. "$dir/env" && command -v kubectl)"
"$kubectl" --kubeconfig "$dir/kubeconfig" apply -f manifests/crds.yaml >/dev/null
"$kubectl" --kubeconfig "$dir/kubeconfig" wait --for=condition=Established crd --all --timeout=30s >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
echo "127.0.0.1:$port" >"$dir/operator-metrics-addr"
rm -f "$out.zst"
KUBECONFIG="$dir/kubeconfig" heaptrack -o "$out" "$bin/orchestra-operator" \
    --metrics-addr "127.0.0.1:$port" --lease-namespace default >"$dir/logs/orchestra-operator.log" 2>&1 &
heaptrack_pid=$!
operator_pid=""
for _ in $(seq 100); do
    operator_pid=$(pgrep -f -n "^$bin/orchestra-operator" || true)
    [ -n "$operator_pid" ] && break
    sleep 0.1
done
[ -n "$operator_pid" ] || { echo "profile: the operator did not start (log: $dir/logs/orchestra-operator.log)" >&2; exit 1; }
echo "$operator_pid" >"$dir/pids/orchestra-operator.pid"

echo "profile: $experiments Experiments x $trials trials, $parallelism at a time each, pods run ${pod_s} s, operator under heaptrack"
"$bin/orchestra" bench-cluster --cluster "$dir" --experiments "$experiments" --trials "$trials" \
    --parallelism "$parallelism" --store "$dir/store" --timeout-s 3600 --out "$out-bench"

kill -TERM "$operator_pid"
wait "$heaptrack_pid" || true
scripts/cluster.sh down "$dir" >/dev/null 2>&1
heaptrack_print --print-peaks 1 --print-allocators 0 --print-temporary 0 --print-leaks 0 \
    --peak-limit 25 --sub-peak-limit 4 "$out.zst" >"$out.txt"
grep -E "^(peak heap memory consumption|peak RSS)" "$out.txt" || true
echo "written: $out.zst (heaptrack_gui), $out.txt (the peak's call sites), $out-bench.{json,md}"
