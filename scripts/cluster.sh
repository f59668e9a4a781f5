#!/usr/bin/env bash
# A real Kubernetes control plane on this machine, the way envtest starts one, from the upstream
# programs `make setup` builds (scripts/k8s_tools.sh): etcd, kube-apiserver (generated
# certificates, RBAC and Node authorization, NodeRestriction, service-account keys and issuer, an
# audit log), kube-controller-manager (Job, garbage collector, namespace, service-account token,
# EndpointSlice, node lifecycle, ... controllers) and kube-scheduler, on loopback at free ports.
# Optionally node agents (orchestra-node-agent: pods run as processes) and the operator. With
# node agents and root, a pod network: a Linux bridge per cluster (orcbrN, 10.200.N.0/24, the
# host at 10.200.N.1), each pod in its own network namespace with an address on it, and CoreDNS
# (kubernetes plugin) on 10.200.N.1 answering Services and the gangs' pod names.
#
#   scripts/cluster.sh up DIR     start everything; DIR gets kubeconfig, env, pids/, logs/
#   scripts/cluster.sh down DIR   stop every process that `up` started in DIR
#   scripts/cluster.sh env DIR    print the exports for a shell (eval "$(scripts/cluster.sh env DIR)")
#   scripts/cluster.sh restart DIR NAME   stop one process (etcd, kube-apiserver, ...,
#                                 orchestra-node-1) and start it again with the same command
#                                 line, waiting until it is ready again (faults on demand)
#   scripts/cluster.sh stop DIR NAME      stop one process, SIGKILL to it and to its pods' processes
#                                 for a node agent (a node that dies: no heartbeat, nothing runs)
#
# Settings (environment): CLUSTER_NODES (node agents, default 0), CLUSTER_NODE_CPU (default the
# cores), CLUSTER_NODE_MEMORY (8Gi), CLUSTER_NODE_GPUS (0), CLUSTER_NODE_GRACE (how long a node
# may miss heartbeats before it is NotReady, 40s), CLUSTER_NODE_HEARTBEAT_S (10), CLUSTER_POD_EVICTION_S (how long pods stay on
# a NotReady or unreachable node before they are evicted, 300), CLUSTER_IMAGES (more
# space-separated PATTERN=DIR image folders for the agents), CLUSTER_KWOK_NODES (fake nodes run by
# KWOK, whose pods run for CLUSTER_KWOK_POD_S without a container: scripts/cluster_kwok.sh),
# CLUSTER_AUDIT_READS=1 (the audit log records reads too), CLUSTER_CLIENT_QPS (the controller
# manager's and the scheduler's client rate limit), CLUSTER_KUEUE=1 (the Kueue manager
# with its CRDs and webhooks: scripts/cluster_kueue.sh), CLUSTER_OPERATOR=1 (start
# orchestra-operator with the CRDs applied), CLUSTER_OWNER_PID (stop everything when that process
# exits, for tests that may die without cleaning up), ORCHESTRA_BIN (our release or debug
# binaries; default $CARGO_TARGET_DIR/release), CLUSTER_POD_NETWORK (auto: when it can be made;
# 1: required; 0: pods share the host's loopback address).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"

usage() { echo "usage: scripts/cluster.sh up|down|env DIR, or restart|stop DIR NAME" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)
case "$cmd" in
restart | stop) [ $# -eq 3 ] || usage ;;
*) [ $# -eq 2 ] || usage ;;
esac

k8s_bin="$("$here/scripts/k8s_tools.sh" --print)"
kubectl="$k8s_bin/kubectl"

log() { echo "cluster: $*" >&2; }

stop_all() {
    [ -d "$dir/pids" ] || return 0
    # The reverse of the start order: agents and operator, scheduler, controllers, API, etcd.
    local f pid
    for f in $(ls -t "$dir/pids"/*.pid 2>/dev/null); do
        pid=$(cat "$f")
        kill -TERM "$pid" 2>/dev/null || true
    done
    for _ in $(seq 50); do
        local alive=0
        for f in "$dir/pids"/*.pid; do
            [ -e "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && alive=1
        done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for f in "$dir/pids"/*.pid; do
        [ -e "$f" ] || continue
        kill -KILL "$(cat "$f")" 2>/dev/null || true
        rm -f "$f"
    done
}

# The pod network's bridge and whatever namespaces the node agents left on it.
remove_network() {
    [ -f "$dir/pod-bridge" ] || return 0
    local bridge ns
    bridge=$(cat "$dir/pod-bridge")
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -F "$bridge." || true); do
        ip netns del "$ns" 2>/dev/null || true
    done
    ip link del "$bridge" 2>/dev/null || true
    rm -f "$dir/pod-bridge" "$dir/pod-gateway"
}

# Each process of the cluster: started in its own session, its pid in pids/, its command line in
# cmd/ (for `restart`), its log in logs/ (appended to across restarts).
start() { # name command...
    local name=$1
    shift
    mkdir -p "$dir/cmd"
    printf '%q ' "$@" >"$dir/cmd/$name"
    echo "--- started $(date -u +%FT%TZ)" >>"$dir/logs/$name.log"
    setsid "$@" >>"$dir/logs/$name.log" 2>&1 </dev/null &
    echo $! >"$dir/pids/$name.pid"
}

alive() { kill -0 "$(cat "$dir/pids/$1.pid")" 2>/dev/null; }

# Waits until the command succeeds; the last such check of each process is kept in ready/, so
# that `restart` waits for the same thing.
wait_for() { # what seconds command...
    local what=$1 secs=$2
    shift 2
    mkdir -p "$dir/ready"
    printf '%q ' "$@" >"$dir/ready/$what"
    local until=$(($(date +%s) + secs))
    until "$@" >/dev/null 2>&1; do
        if ! alive "$what"; then
            log "$what exited; its log:"
            tail -n 30 "$dir/logs/$what.log" >&2 || true
            return 1
        fi
        if [ "$(date +%s)" -ge $until ]; then
            log "$what did not come up within ${secs}s; its log:"
            tail -n 30 "$dir/logs/$what.log" >&2 || true
            return 1
        fi
        sleep 0.2
    done
}


# Stops one process (SIGTERM, SIGKILL after 10 s, or at once with `kill`), and forgets its pid.
stop_one() { # name [kill]
    local f="$dir/pids/$1.pid" pid
    [ -f "$f" ] || { echo "cluster: no process $1 in $dir (see $dir/pids)" >&2; exit 1; }
    pid=$(cat "$f")
    if [ "${2:-}" = kill ]; then
        kill -KILL "$pid" 2>/dev/null || true
    else
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$f"
}

case "$cmd" in
restart)
    name=$3
    [ -f "$dir/cmd/$name" ] || { echo "cluster: no process $name in $dir (see $dir/cmd)" >&2; exit 1; }
    # One that `stop` stopped is only started.
    [ -f "$dir/pids/$name.pid" ] && stop_one "$name"
    log "$name stopped; starting it again"
    eval "start $name $(cat "$dir/cmd/$name")"
    if [ -f "$dir/ready/$name" ]; then
        eval "wait_for $name 90 $(cat "$dir/ready/$name")"
    fi
    log "$name is back"
    exit 0
    ;;
stop)
    name=$3
    case "$name" in
    orchestra-node-*)
        # A node that dies: the agent and every process of its pods go at once (each pod runs
        # in its own session under the agent).
        pids=$(pgrep -s "$(cat "$dir/pids/$name.pid")" 2>/dev/null || true)
        for p in $(pgrep -P "$(cat "$dir/pids/$name.pid")" 2>/dev/null || true); do
            pids="$pids $(pgrep -s "$p" 2>/dev/null || true) $p"
        done
        stop_one "$name" kill
        for p in $pids; do kill -KILL "$p" 2>/dev/null || true; done
        ;;
    *) stop_one "$name" ;;
    esac
    log "$name stopped"
    exit 0
    ;;
down)
    # The watchdog (CLUSTER_OWNER_PID) goes first, unless it is the one asking: its `bash -c`
    # execs this script as its last command, so then this process has the watchdog's pid.
    if [ -f "$dir/watchdog.pid" ]; then
        watchdog=$(cat "$dir/watchdog.pid")
        if [ "$watchdog" != "$$" ] && [ "$watchdog" != "$PPID" ]; then
            kill "$watchdog" 2>/dev/null || true
        fi
    fi
    rm -f "$dir/watchdog.pid"
    stop_all
    remove_network
    log "stopped (logs kept in $dir/logs)"
    exit 0
    ;;
env)
    [ -f "$dir/env" ] || { echo "cluster: no cluster in $dir (scripts/cluster.sh up $dir)" >&2; exit 1; }
    cat "$dir/env"
    exit 0
    ;;
up) ;;
*) usage ;;
esac

for p in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    [ -x "$k8s_bin/$p" ] || { echo "cluster: $k8s_bin/$p is missing: run make setup" >&2; exit 1; }
done
command -v openssl >/dev/null || { echo "cluster: openssl is missing (apt-get install openssl)" >&2; exit 1; }
for f in "$dir"/pids/*.pid; do
    if [ -e "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then
        echo "cluster: $dir already has a running cluster (scripts/cluster.sh down $dir first)" >&2
        exit 1
    fi
done
# A folder left by a cluster that is no longer running starts afresh.
remove_network
rm -rf "$dir/pids" "$dir/etcd" "$dir/pki" "$dir/nodes" "$dir/env" "$dir/ports-given" "$dir/kwok-nodes" "$dir/kwok-pod-seconds" "$dir/operator-metrics-addr"
mkdir -p "$dir/pki" "$dir/pids" "$dir/logs" "$dir/etcd"
trap 'log "start failed: stopping what started (logs in $dir/logs)"; stop_all; remove_network' ERR
started_at=$(date +%s)

# A port free now and not handed out before by this start: the kernel may give a port it just
# gave again (etcd and kube-apiserver once got the same one), so each is written down, in a file
# since each caller runs this in a subshell.
free_port() {
    local p
    touch "$dir/ports-given"
    while :; do
        p=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        grep -qx "$p" "$dir/ports-given" || break
    done
    echo "$p" >>"$dir/ports-given"
    echo "$p"
}

# --- certificates: one CA, the API server's serving certificate, a client certificate per
# identity (the admin in system:masters, the controller manager, the scheduler, each node), and
# the service-account signing key.
pki="$dir/pki"
openssl_q() { openssl "$@" 2>>"$dir/logs/openssl.log"; }
openssl_q req -x509 -newkey rsa:2048 -nodes -keyout "$pki/ca.key" -out "$pki/ca.crt" -days 30 \
    -subj "/CN=orchestra-test-ca"
client_cert() { # name CN O
    local subj="/CN=$2"
    [ -n "$3" ] && subj="/O=$3$subj"
    openssl_q req -newkey rsa:2048 -nodes -keyout "$pki/$1.key" -out "$pki/$1.csr" -subj "$subj"
    printf 'extendedKeyUsage=clientAuth\n' >"$pki/$1.ext"
    openssl_q x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
        -out "$pki/$1.crt" -days 30 -extfile "$pki/$1.ext"
}
openssl_q req -newkey rsa:2048 -nodes -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" \
    -subj "/CN=kube-apiserver"
cat >"$pki/apiserver.ext" <<EOF
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EOF
openssl_q x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -out "$pki/apiserver.crt" -days 30 -extfile "$pki/apiserver.ext"
client_cert admin orchestra-admin system:masters
client_cert controller-manager system:kube-controller-manager ""
client_cert scheduler system:kube-scheduler ""
openssl_q genrsa -out "$pki/sa.key" 2048
openssl_q rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub"

etcd_port=$(free_port)
etcd_peer=$(free_port)
api_port=$(free_port)
kcm_port=$(free_port)
sched_port=$(free_port)
server="https://127.0.0.1:$api_port"

kubeconfig() { # file user
    cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: orchestra-local
  cluster: { server: "$server", certificate-authority: "$pki/ca.crt" }
users:
- name: $2
  user: { client-certificate: "$pki/$2.crt", client-key: "$pki/$2.key" }
contexts:
- name: orchestra-local
  context: { cluster: orchestra-local, user: $2, namespace: default }
current-context: orchestra-local
EOF
}
kubeconfig "$dir/kubeconfig" admin
kubeconfig "$dir/controller-manager.kubeconfig" controller-manager
kubeconfig "$dir/scheduler.kubeconfig" scheduler


log "etcd on 127.0.0.1:$etcd_port"
start etcd "$k8s_bin/etcd" --name orchestra --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "orchestra=http://127.0.0.1:$etcd_peer" \
    --unsafe-no-fsync --quota-backend-bytes 4294967296 --log-level warn
wait_for etcd 30 curl -sf "http://127.0.0.1:$etcd_port/health"

# Webhooks and aggregated APIs are called at their Services' endpoints
# (--enable-aggregator-routing): no kube-proxy routes a cluster IP here.
# Everything the API server does is written to the audit log at the Metadata level (who did what
# to which object), so that tests can say which replica wrote.
# CLUSTER_AUDIT_READS=1 logs the reads too (the cluster benchmark counts every request by whom).
reads_level=None
[ "${CLUSTER_AUDIT_READS:-0}" = 1 ] && reads_level=Metadata
cat >"$dir/audit-policy.yaml" <<EOF
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: $reads_level
  verbs: [get, list, watch]
- level: None
  resources: [{ group: coordination.k8s.io, resources: [leases] }]
  users: [system:kube-controller-manager, system:kube-scheduler]
- level: Metadata
EOF

log "kube-apiserver on $server"
start kube-apiserver "$k8s_bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --cert-dir "$pki" --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range 10.96.0.0/16 --allow-privileged=true \
    --endpoint-reconciler-type none --enable-aggregator-routing=true \
    --audit-policy-file "$dir/audit-policy.yaml" --audit-log-path "$dir/logs/audit.log" \
    --audit-log-format json \
    --default-not-ready-toleration-seconds "${CLUSTER_POD_EVICTION_S:-300}" \
    --default-unreachable-toleration-seconds "${CLUSTER_POD_EVICTION_S:-300}"
wait_for kube-apiserver 90 "$kubectl" --kubeconfig "$dir/kubeconfig" get --raw /readyz

log "kube-controller-manager and kube-scheduler"
# CLUSTER_CLIENT_QPS lifts the two components' client-side rate limits (20 and 50 requests a
# second by default), as kwokctl's disableQPSLimits does for scale tests: at the defaults the Job
# controller alone bounds how fast trials start (docs/results/2026-12-03-cluster-scale.md).
client_qps=()
if [ -n "${CLUSTER_CLIENT_QPS:-}" ]; then
    client_qps=(--kube-api-qps "$CLUSTER_CLIENT_QPS" --kube-api-burst "$((CLUSTER_CLIENT_QPS * 2))")
fi
start kube-controller-manager "$k8s_bin/kube-controller-manager" \
    --kubeconfig "$dir/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$dir/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$dir/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$kcm_port" --leader-elect=false \
    --use-service-account-credentials=true \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
    --node-monitor-grace-period "${CLUSTER_NODE_GRACE:-40s}" "${client_qps[@]}"
start kube-scheduler "$k8s_bin/kube-scheduler" \
    --kubeconfig "$dir/scheduler.kubeconfig" \
    --authentication-kubeconfig "$dir/scheduler.kubeconfig" \
    --authorization-kubeconfig "$dir/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$sched_port" --leader-elect=false "${client_qps[@]}"
wait_for kube-controller-manager 60 curl -skf "https://127.0.0.1:$kcm_port/healthz"
wait_for kube-scheduler 60 curl -skf "https://127.0.0.1:$sched_port/healthz"
# The namespace controller and the service-account controllers are working once the default
# namespace has its service account.
wait_for kube-controller-manager 60 "$kubectl" --kubeconfig "$dir/kubeconfig" -n default get serviceaccount default

ours="${ORCHESTRA_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/orchestra/target}/release}"
nodes=${CLUSTER_NODES:-0}

# --- the pod network: one bridge per cluster, the first free orcbrN whose 10.200.N.0/24 no
# route on this machine uses (creating the bridge is the lock between clusters started at once).
pod_network=${CLUSTER_POD_NETWORK:-auto}
bridge=""
if [ "$nodes" -gt 0 ] && [ "$pod_network" != 0 ]; then
    why=""
    if ! command -v ip >/dev/null; then
        why="iproute2's ip is missing (apt-get install iproute2)"
    elif [ "$(id -u)" != 0 ]; then
        why="pod network namespaces need root"
    elif [ ! -x "$k8s_bin/coredns" ]; then
        why="$k8s_bin/coredns is missing (make k8s-tools)"
    else
        for n in $(seq 0 255); do
            ip -4 route 2>/dev/null | grep -q "^10\.200\.$n\." && continue
            if ip link add "orcbr$n" type bridge 2>/dev/null; then
                bridge="orcbr$n"
                break
            fi
        done
        [ -n "$bridge" ] || why="no bridge could be created (ip link add type bridge refused, or orcbr0-255 all taken)"
    fi
    if [ -n "$why" ]; then
        [ "$pod_network" = 1 ] && { echo "cluster: CLUSTER_POD_NETWORK=1 but $why" >&2; false; }
        log "pod network off: $why; pods share 127.0.0.1 (gangs of 2+ ranks cannot rendezvous by name)"
    fi
fi
if [ -n "$bridge" ]; then
    echo "$bridge" >"$dir/pod-bridge"
    n=${bridge#orcbr}
    gateway="10.200.$n.1"
    ip addr add "$gateway/24" dev "$bridge"
    ip link set "$bridge" up
    echo "$gateway" >"$dir/pod-gateway"
    # CoreDNS reads Services, EndpointSlices, Pods and Namespaces as its own user (as kubeadm's).
    client_cert coredns system:coredns ""
    kubeconfig "$dir/coredns.kubeconfig" coredns
    "$kubectl" --kubeconfig "$dir/kubeconfig" apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: "system:coredns" }
rules:
- { apiGroups: [""], resources: [endpoints, services, pods, namespaces], verbs: [list, watch] }
- { apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [list, watch] }
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: { name: "system:coredns" }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns" }
subjects: [{ apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:coredns" }]
EOF
    dns_ready=$(free_port)
    cat >"$dir/Corefile" <<EOF
cluster.local:53 {
    bind $gateway
    errors
    log
    ready 127.0.0.1:$dns_ready
    kubernetes cluster.local {
        kubeconfig $dir/coredns.kubeconfig orchestra-local
        ttl 0
    }
}
.:53 {
    bind $gateway
    errors
    forward . /etc/resolv.conf
}
EOF
    log "pod network: bridge $bridge, 10.200.$n.0/24, CoreDNS on $gateway:53"
    start coredns "$k8s_bin/coredns" -conf "$dir/Corefile"
    wait_for coredns 60 curl -sf "http://127.0.0.1:$dns_ready/ready"
fi

read -ra image_rules <<<"${CLUSTER_IMAGES:-}"
extra_images=()
for rule in "${image_rules[@]}"; do extra_images+=(--image "$rule"); done
for i in $(seq 1 "$nodes"); do
    node="orchestra-node-$i"
    client_cert "$node" "system:node:$node" system:nodes
    kubeconfig "$dir/$node.kubeconfig" "$node"
    [ -x "$ours/orchestra-node-agent" ] || { echo "cluster: $ours/orchestra-node-agent is missing (cargo build --release -p orchestra-node-agent)" >&2; false; }
    node_network=()
    if [ -n "$bridge" ]; then
        # Each node its share of .10-.249.
        share=$((240 / nodes))
        first=$((10 + (i - 1) * share))
        node_network=(--pod-bridge "$bridge" --pod-subnet "10.200.$n.0/24" --cluster-dns "$gateway"
            --pod-ips "10.200.$n.$first-10.200.$n.$((first + share - 1))")
    fi
    log "node $node (pods run as processes under $dir/nodes/$node)"
    start "$node" "$ours/orchestra-node-agent" --kubeconfig "$dir/$node.kubeconfig" --node-name "$node" \
        --cpu "${CLUSTER_NODE_CPU:-$(nproc)}" --memory "${CLUSTER_NODE_MEMORY:-8Gi}" \
        --gpus "${CLUSTER_NODE_GPUS:-0}" --root "$dir/nodes/$node" --heartbeat-s "${CLUSTER_NODE_HEARTBEAT_S:-10}" \
        --image "*orchestra-worker*=$ours" "${extra_images[@]}" "${node_network[@]}"
done
for i in $(seq 1 "$nodes"); do
    wait_for "orchestra-node-$i" 60 "$kubectl" --kubeconfig "$dir/kubeconfig" wait --for=condition=Ready \
        "node/orchestra-node-$i" --timeout=1s
done

if [ "${CLUSTER_KWOK_NODES:-0}" -gt 0 ]; then
    # shellcheck source=scripts/cluster_kwok.sh
    . "$here/scripts/cluster_kwok.sh"
    kwok_up "$CLUSTER_KWOK_NODES"
fi

if [ "${CLUSTER_KUEUE:-0}" = 1 ]; then
    # shellcheck source=scripts/cluster_kueue.sh
    . "$here/scripts/cluster_kueue.sh"
    kueue_up
fi

if [ "${CLUSTER_OPERATOR:-0}" = 1 ]; then
    "$kubectl" --kubeconfig "$dir/kubeconfig" apply -f "$here/manifests/crds.yaml" >/dev/null
    "$kubectl" --kubeconfig "$dir/kubeconfig" wait --for=condition=Established crd --all --timeout=30s >/dev/null
    log "orchestra-operator (log: $dir/logs/orchestra-operator.log)"
    [ -x "$ours/orchestra-operator" ] || { echo "cluster: $ours/orchestra-operator is missing (cargo build --release -p orchestra-operator)" >&2; false; }
    metrics_addr="127.0.0.1:$(free_port)"
    echo "$metrics_addr" >"$dir/operator-metrics-addr"
    KUBECONFIG="$dir/kubeconfig" start orchestra-operator "$ours/orchestra-operator" \
        --metrics-addr "$metrics_addr" --lease-namespace default
fi

cat >"$dir/env" <<EOF
export KUBECONFIG="$dir/kubeconfig"
export PATH="$k8s_bin:\$PATH"
EOF
if [ -n "$bridge" ]; then
    # Where pods reach this machine (an S3 store for them listens there).
    echo "export CLUSTER_POD_GATEWAY=$gateway" >>"$dir/env"
fi

if [ -n "${CLUSTER_OWNER_PID:-}" ]; then
    # Stops the cluster when its owner (a test process) ends, however it ends.
    setsid bash -c "while kill -0 $CLUSTER_OWNER_PID 2>/dev/null; do sleep 1; done; '$here/scripts/cluster.sh' down '$dir'" \
        >/dev/null 2>&1 </dev/null &
    echo $! >"$dir/watchdog.pid"
fi
trap - ERR
log "up in $(($(date +%s) - started_at)) s: $server (Kubernetes $("$kubectl" --kubeconfig "$dir/kubeconfig" version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])'))"
log "use it: eval \"\$(scripts/cluster.sh env $dir)\"; kubectl get nodes; stop it: scripts/cluster.sh down $dir"
