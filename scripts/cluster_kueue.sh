# Kueue on the local control plane (CLUSTER_KUEUE=1), sourced by scripts/cluster.sh up: the real
# Kueue manager (sigs.k8s.io/kueue, built from its Go module by scripts/k8s_tools.sh) as a process
# of the cluster, with upstream's CRDs, webhook configurations and certificate Secret, named as
# upstream's kustomization names them, served by the API server.
#
# Kueue runs as a process, not a pod, so it listens on the pod network's host address, and its
# Service (kueue-webhook-service, as upstream's) has an EndpointSlice pointing there: the API
# server resolves a webhook's Service to its endpoints (--enable-aggregator-routing; there is no
# kube-proxy to route a cluster IP) and checks the certificate against the Service's DNS name,
# which Kueue's own certificate rotation writes into its Secret (scripts/secret_volume.sh keeps
# that Secret as files in the manager's certDir, as a pod's Secret volume would). Only the
# batch/v1 Job integration runs, and only
# its webhooks and those of Kueue's own types are registered; the visibility API server (an
# aggregated API, VisibilityOnDemand) is off.
# Uses cluster.sh's dir, kubectl, here, k8s_bin, gateway, log, start, wait_for, free_port.

kueue_up() {
    local kdir="$dir/kueue" module port health metrics convert ns=kueue-system svc=kueue-webhook-service
    local k=("$kubectl" --kubeconfig "$dir/kubeconfig")
    [ -x "$k8s_bin/kueue" ] || { echo "cluster: $k8s_bin/kueue is missing (make k8s-tools)" >&2; return 1; }
    [ -n "${gateway:-}" ] || {
        echo "cluster: CLUSTER_KUEUE=1 needs the pod network (root, CLUSTER_NODES >= 1): the API server reaches Kueue's webhooks at an endpoint of their Service, which may not be a loopback address" >&2
        return 1
    }
    module=$(cd "$here/tools/kueue" && GOFLAGS=-mod=readonly go list -m -f '{{.Dir}}' sigs.k8s.io/kueue)
    [ -d "$module/config/components/crd/bases" ] || { echo "cluster: Kueue's manifests are not in $module (make k8s-tools downloads them)" >&2; return 1; }
    mkdir -p "$kdir/certs"
    port=$(free_port)
    health=$(free_port)
    metrics=$(free_port)

    # The CRDs that upstream's kustomization gives a conversion webhook (v1beta1 <-> v1beta2).
    convert=$(grep -oE '^- path: patches/webhook_in_[a-z]+\.yaml' "$module/config/components/crd/kustomization.yaml" |
        sed -E 's/.*webhook_in_([a-z]+)\.yaml/\1/' | paste -sd, -)
    "${k[@]}" create namespace "$ns" >/dev/null
    "${k[@]}" create --dry-run=client -o json \
        -f "$module/config/components/crd/bases" -f "$module/config/components/webhook/manifests.yaml" |
        python3 "$here/scripts/kueue_manifests.py" --namespace "$ns" --service "$svc" \
            --convert "$convert" --keep batch-v1-job,kueue-x-k8s-io 2>>"$dir/logs/kueue-manifests.log" >"$kdir/manifests.json" ||
        { echo "cluster: Kueue's manifests could not be prepared:" >&2; cat "$dir/logs/kueue-manifests.log" >&2; return 1; }
    # Server-side: the Workload CRD is larger than client-side apply's annotation may hold.
    "${k[@]}" apply --server-side -f "$kdir/manifests.json" >/dev/null
    "${k[@]}" wait --for=condition=Established crd --all --timeout=60s >/dev/null
    "${k[@]}" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Secret
metadata: { name: kueue-webhook-server-cert, namespace: $ns }
---
apiVersion: v1
kind: Service
metadata: { name: $svc, namespace: $ns }
spec:
  ports: [{ name: https, port: 443, protocol: TCP, targetPort: $port }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: $svc-host
  namespace: $ns
  labels:
    kubernetes.io/service-name: $svc
    endpointslice.kubernetes.io/managed-by: cluster.sh.orchestra.dev
addressType: IPv4
endpoints: [{ addresses: ["$gateway"], conditions: { ready: true } }]
ports: [{ name: https, port: $port, protocol: TCP }]
EOF

    cat >"$kdir/config.yaml" <<EOF
apiVersion: config.kueue.x-k8s.io/v1beta2
kind: Configuration
namespace: $ns
health:
  healthProbeBindAddress: 127.0.0.1:$health
metrics:
  bindAddress: 127.0.0.1:$metrics
webhook:
  host: $gateway
  port: $port
  certDir: $kdir/certs
leaderElection:
  leaderElect: false
internalCertManagement:
  enable: true
  webhookServiceName: $svc
  webhookSecretName: kueue-webhook-server-cert
integrations:
  frameworks: ["batch/job"]
featureGates:
  VisibilityOnDemand: false
EOF
    log "kueue (sigs.k8s.io/kueue $(basename "$module" | sed 's/.*@//'), webhooks on $gateway:$port behind $ns/$svc)"
    # The rotation writes the certificate into the Secret and waits for it as files in certDir,
    # where a pod would have the Secret mounted.
    start kueue-cert-volume "$here/scripts/secret_volume.sh" "$dir/kubeconfig" "$ns" kueue-webhook-server-cert "$kdir/certs"
    KUBECONFIG="$dir/kubeconfig" start kueue "$k8s_bin/kueue" --config "$kdir/config.yaml"
    wait_for kueue 120 curl -sf "http://127.0.0.1:$health/readyz"
    # Ready once its webhooks answer through the API server: a server-side dry run of a
    # ResourceFlavor goes through the mutating and validating webhooks.
    cat >"$kdir/ready-check.yaml" <<EOF
apiVersion: kueue.x-k8s.io/v1beta2
kind: ResourceFlavor
metadata: { name: orchestra-ready-check }
EOF
    wait_for kueue 60 "${k[@]}" create --dry-run=server -f "$kdir/ready-check.yaml"
}
