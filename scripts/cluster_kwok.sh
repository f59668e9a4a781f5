# Fake nodes on the local control plane (CLUSTER_KWOK_NODES=K), sourced by scripts/cluster.sh up:
# KWOK (sigs.k8s.io/kwok, built from its Go module by `scripts/k8s_tools.sh --with kwok`) as a
# process of the cluster, managing K Node objects annotated kwok.x-k8s.io/node=fake. The real
# scheduler binds pods to them and KWOK plays their kubelet: heartbeats (Leases), pods Running at
# once with an address, and pods owned by a Job Succeeded CLUSTER_KWOK_POD_S seconds later (a
# worker that trains for that long), deleted pods removed. No container runs: what is measured is
# the control plane and the operator, for `orchestra bench-cluster`.
#
# The Stages are upstream's own (the module's kustomize/stage: node-initialize,
# node-heartbeat-with-lease, pod-ready, pod-complete, pod-delete), with one change: pod-complete
# waits CLUSTER_KWOK_POD_S seconds (and up to a tenth more, drawn per pod, so that a wave of pods
# started together does not finish in the same instant).
# Settings: CLUSTER_KWOK_NODES, CLUSTER_KWOK_POD_S (default 30), CLUSTER_KWOK_NODE_PODS (pods per
# node, default 110, the kubelet's default), CLUSTER_KWOK_NODE_CPU (default 64).
# Uses cluster.sh's dir, kubectl, here, k8s_bin, log, start, wait_for.

kwok_up() {
    local nodes=$1 module stages="$dir/kwok-stages.yaml" run_ms pods cpu i
    local k=("$kubectl" --kubeconfig "$dir/kubeconfig")
    [ -x "$k8s_bin/kwok" ] || { echo "cluster: $k8s_bin/kwok is missing (scripts/k8s_tools.sh --with kwok)" >&2; return 1; }
    module=$(cd "$here/tools/kwok" && GOFLAGS=-mod=readonly go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
    local s="$module/kustomize/stage"
    [ -f "$s/pod/fast/pod-complete.yaml" ] || { echo "cluster: KWOK's stages are not in $module (scripts/k8s_tools.sh --with kwok downloads them)" >&2; return 1; }
    run_ms=$(( ${CLUSTER_KWOK_POD_S:-30} * 1000 ))
    pods=${CLUSTER_KWOK_NODE_PODS:-110}
    cpu=${CLUSTER_KWOK_NODE_CPU:-64}
    {
        cat "$s/node/fast/node-initialize.yaml"
        echo "---"
        cat "$s/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml"
        echo "---"
        cat "$s/pod/fast/pod-ready.yaml"
        echo "---"
        # The only change to upstream's stages: a pod runs for a while before it completes.
        awk -v ms="$run_ms" '{ print } /^spec:$/ && !done {
            print "  delay:"; print "    durationMilliseconds: " ms
            print "    jitterDurationMilliseconds: " int(ms * 1.1); done = 1 }' "$s/pod/fast/pod-complete.yaml"
        echo "---"
        cat "$s/pod/fast/pod-delete.yaml"
    } >"$stages"
    echo "$nodes" >"$dir/kwok-nodes"
    echo "${CLUSTER_KWOK_POD_S:-30}" >"$dir/kwok-pod-seconds"
    grep -q "durationMilliseconds: $run_ms" "$stages" || { echo "cluster: could not set the pod run time in $stages" >&2; return 1; }

    log "KWOK: $nodes fake node(s), $pods pods and $cpu CPUs each; Job pods run ${CLUSTER_KWOK_POD_S:-30} s (stages: $stages)"
    # The Node objects first: KWOK initialises the ones it manages (conditions, addresses).
    for i in $(seq 1 "$nodes"); do
        cat <<EOF
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations: { kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0" }
  labels: { kubernetes.io/hostname: kwok-node-$i, kubernetes.io/os: linux, kubernetes.io/arch: amd64, type: kwok }
status:
  allocatable: { cpu: "$cpu", memory: 256Gi, pods: "$pods" }
  capacity: { cpu: "$cpu", memory: 256Gi, pods: "$pods" }
---
EOF
    done | "${k[@]}" apply -f - >/dev/null
    start kwok "$k8s_bin/kwok" --kubeconfig "$dir/kubeconfig" \
        --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
        --node-lease-duration-seconds 40 --cidr 10.128.0.0/12 --config "$stages"
    for i in $(seq 1 "$nodes"); do
        wait_for kwok 60 "${k[@]}" wait --for=condition=Ready "node/kwok-node-$i" --timeout=1s
    done
}
