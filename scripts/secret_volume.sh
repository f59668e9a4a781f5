#!/usr/bin/env bash
# What the kubelet's Secret volume does for a pod, for a cluster process that is not one (the
# Kueue manager, whose certificate rotation writes its serving certificate into a Secret and
# expects to find it as files): keeps the Secret's keys as files in a folder, again whenever the
# Secret changes, as the kubelet's atomic writer does: each version's files in a folder of their
# own, `..data` a link to the current one (replaced by a rename), and each key a link through
# `..data`, so that a reader sees every key of one version or none. Runs until killed.
#
#   scripts/secret_volume.sh KUBECONFIG NAMESPACE NAME DIR
set -euo pipefail
[ $# -eq 4 ] || { echo "usage: scripts/secret_volume.sh KUBECONFIG NAMESPACE NAME DIR" >&2; exit 2; }
kubeconfig=$1 ns=$2 name=$3 dir=$4
kubectl="$("$(dirname "$0")/k8s_tools.sh" --print)/kubectl"
mkdir -p "$dir"
# Writes one version of the Secret (JSON in $SECRET) into the folder unless it is the last one
# written; prints the version now in place.
writer=$(cat <<'PY'
import base64, json, os, sys

folder, last = sys.argv[1], sys.argv[2]
secret = json.loads(os.environ["SECRET"])
version = secret["metadata"]["resourceVersion"]
data = secret.get("data") or {}
if version != last and data:
    here = os.path.join(folder, ".." + version)
    os.makedirs(here, exist_ok=True)
    for key, value in data.items():
        with open(os.path.join(here, key), "wb") as f:
            f.write(base64.b64decode(value))
        link = os.path.join(folder, key)
        if not os.path.islink(link):
            # Dangling until ..data exists: every key appears at once.
            os.symlink(os.path.join("..data", key), link)
    tmp = os.path.join(folder, "..data.tmp")
    if os.path.lexists(tmp):
        os.remove(tmp)
    os.symlink(".." + version, tmp)
    os.replace(tmp, os.path.join(folder, "..data"))
    for old in os.listdir(folder):
        if old.startswith("..") and old[2:].isdigit() and old != ".." + version:
            for f in os.listdir(os.path.join(folder, old)):
                os.remove(os.path.join(folder, old, f))
            os.rmdir(os.path.join(folder, old))
    print(f"secret_volume: {secret['metadata']['namespace']}/{secret['metadata']['name']} at "
          f"resourceVersion {version}: {' '.join(sorted(data))} in {folder}", file=sys.stderr)
    last = version
print(last)
PY
)
last=""
while true; do
    if secret=$("$kubectl" --kubeconfig "$kubeconfig" -n "$ns" get secret "$name" -o json 2>/dev/null); then
        last=$(SECRET="$secret" python3 -c "$writer" "$dir" "$last")
    fi
    sleep 1
done
