#!/usr/bin/env bash
# End-to-end test on a kind cluster. NOT run by CI: it needs Docker, kind, kubectl and helm,
# which the CI machine lacks. Run it by hand on a machine that has them:
#   tests/kind/run.sh            (KEEP=1 keeps the cluster afterwards)
# It creates a cluster, builds and loads both images, installs MinIO (the store) and the chart,
# applies a small quickstart Experiment, waits for Succeeded, prints the leaderboard, checks that
# a deleted worker pod leads to a whole-gang restart and a finished trial, and tears down.
set -euo pipefail
cd "$(dirname "$0")/../.."
cluster=orchestra-e2e
ns=orchestra-e2e

need() {
    command -v "$1" >/dev/null 2>&1 || { echo "tests/kind/run.sh: '$1' is not installed ($2)" >&2; exit 2; }
}
need docker "https://docs.docker.com/engine/install/"
need kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
need kubectl "https://kubernetes.io/docs/tasks/tools/"
need helm "https://helm.sh/docs/intro/install/"
docker info >/dev/null 2>&1 || { echo "tests/kind/run.sh: the Docker daemon is not reachable" >&2; exit 2; }

step() { echo; echo "== $*"; }
fail() { echo "FAILED: $*" >&2; kubectl -n "$ns" get experiments,trials,jobs,pods -o wide >&2 || true; exit 1; }
cleanup() { if [ "${KEEP:-0}" != 1 ]; then kind delete cluster --name "$cluster" >/dev/null 2>&1 || true; fi; }
trap cleanup EXIT

step "cluster"
kind create cluster --name "$cluster" --wait 120s

step "images"
docker build -f docker/operator.Dockerfile -t orchestra-operator:e2e .
docker build -f docker/worker.Dockerfile --build-arg VARIANT=cpu -t orchestra-worker:e2e .
kind load docker-image --name "$cluster" orchestra-operator:e2e orchestra-worker:e2e

step "store (MinIO) and its credentials"
kubectl create namespace "$ns"
kubectl -n "$ns" apply -f - <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: { name: minio }
spec:
  selector: { matchLabels: { app: minio } }
  template:
    metadata: { labels: { app: minio } }
    spec:
      containers:
        - name: minio
          image: quay.io/minio/minio:latest
          args: [server, /data]
          env: [{ name: MINIO_ROOT_USER, value: orchestra }, { name: MINIO_ROOT_PASSWORD, value: orchestra-secret }]
          ports: [{ containerPort: 9000 }]
---
apiVersion: v1
kind: Service
metadata: { name: minio }
spec: { selector: { app: minio }, ports: [{ port: 9000 }] }
YAML
kubectl -n "$ns" rollout status deploy/minio --timeout=180s
kubectl -n "$ns" run mc --rm -i --restart=Never --image=quay.io/minio/mc:latest --command -- \
    sh -c 'mc alias set m http://minio:9000 orchestra orchestra-secret && mc mb -p m/orchestra-runs'
for target in "$ns" orchestra-system; do
    kubectl create namespace orchestra-system --dry-run=client -o yaml | kubectl apply -f -
    kubectl -n "$target" create secret generic orchestra-store \
        --from-literal=AWS_ACCESS_KEY_ID=orchestra --from-literal=AWS_SECRET_ACCESS_KEY=orchestra-secret \
        --from-literal=AWS_ENDPOINT="http://minio.$ns.svc:9000" --from-literal=AWS_ALLOW_HTTP=true \
        --from-literal=AWS_REGION=us-east-1
done

step "chart"
helm install orchestra charts/orchestra -n orchestra-system \
    --set image.repository=orchestra-operator --set image.tag=e2e \
    --set workerImage.repository=orchestra-worker --set workerImage.tag=e2e --set workerImage.pullPolicy=IfNotPresent
kubectl -n orchestra-system rollout status deploy/orchestra-operator --timeout=120s

step "experiment"
kubectl -n "$ns" apply -f - <<YAML
apiVersion: orchestra.dev/v1alpha1
kind: Experiment
metadata: { name: e2e }
spec:
  dataset: synthetic://lesion?n=96&size=64&seed=7&val=16
  model: { preset: small, inputSize: 64, downsample: 8 }
  variants: [D2, D4]
  hyper: { batchSize: 4 }
  steps: 120
  checkpointEvery: 20
  parallelism: 2
  maxAttempts: 3
  resources: { cpu: "1", memory: 1Gi }
  store: s3://orchestra-runs/e2e
  storeSecret: orchestra-store
YAML

step "a deleted worker pod restarts the whole gang"
for _ in $(seq 120); do
    pod=$(kubectl -n "$ns" get pods -l orchestra.dev/trial=e2e-d4-000 --field-selector=status.phase=Running -o name | head -1)
    [ -n "$pod" ] && break; sleep 2
done
[ -n "${pod:-}" ] || fail "no running worker pod of e2e-d4-000"
sleep 20   # let it write a checkpoint
kubectl -n "$ns" delete "$pod" --wait=false
for _ in $(seq 120); do
    attempts=$(kubectl -n "$ns" get trial e2e-d4-000 -o jsonpath='{.status.attempts}')
    [ "${attempts:-1}" -ge 2 ] && break; sleep 2
done
[ "${attempts:-1}" -ge 2 ] || fail "the gang was not restarted"
kubectl -n "$ns" get job e2e-d4-000-a2 >/dev/null || fail "no Job for attempt 2"
kubectl -n "$ns" get events --field-selector reason=TrialRestarted | grep -q e2e-d4-000 || fail "no TrialRestarted event"

step "wait for Succeeded"
kubectl -n "$ns" wait experiment/e2e --for=jsonpath='{.status.phase}'=Succeeded --timeout=1200s || fail "not Succeeded"
kubectl -n "$ns" get experiments
kubectl -n "$ns" get trials
[ "$(kubectl -n "$ns" get trial e2e-d4-000 -o jsonpath='{.status.phase}')" = Succeeded ] || fail "the restarted trial did not finish"

step "leaderboard"
kubectl -n "$ns" get configmap e2e-leaderboard -o jsonpath='{.data.leaderboard\.md}'
echo
echo "kind e2e: passed"
