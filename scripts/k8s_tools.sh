#!/usr/bin/env bash
# Builds the upstream Kubernetes control plane, etcd, kubectl, helm, CoreDNS (the cluster DNS
# of the pod network) and the Kueue manager from their Go modules, as
# pinned in tools/*/go.mod and go.sum (no Go code of ours: each program is upstream's own main
# package, named by module path). Run by `make k8s-tools` (and so by `make test` and `make cluster`); cached in
# ~/.cache/orchestra/k8s/<release>/bin (ORCHESTRA_K8S_DIR), rebuilt only when a pin changes, and
# checked on reuse (each binary must report the pinned version).
#
#   scripts/k8s_tools.sh          build what is missing or stale, then print the bin folder
#   scripts/k8s_tools.sh --print  only print the bin folder (no build)
#   scripts/k8s_tools.sh --with kwok   also KWOK (the fake nodes of the cluster benchmark; not
#                                      needed by the tests, so not built by default)
set -euo pipefail
cd "$(dirname "$0")/.."

release=v1.37.2
root="${ORCHESTRA_K8S_DIR:-$HOME/.cache/orchestra/k8s/$release}"
bin="$root/bin"
if [ "${1:-}" = --print ]; then
    echo "$bin"
    exit 0
fi
optional=""
if [ "${1:-}" = --with ]; then
    optional=" ${2:?--with needs a program name} "
fi

command -v go >/dev/null || { echo "k8s-tools: the Go toolchain is missing (Go 1.26 builds the control plane)" >&2; exit 1; }
mkdir -p "$bin"
export GOFLAGS="${GOFLAGS:--buildvcs=false} -trimpath"
# Every module is pinned by go.sum: never let a build change a pin.
export GOFLAGS="$GOFLAGS -mod=readonly"

# `kubectl version` and `kube-apiserver --version` tell the truth about what runs.
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    k8s_ldflags+=" -X $pkg.gitVersion=$release -X $pkg.gitMajor=1 -X $pkg.gitMinor=37"
    k8s_ldflags+=" -X $pkg.gitTreeState=clean"
done

# module folder (tools/<group>) | output name | package | version command | what it must print |
# extra linker flags (the version variables upstream's own release build sets). A version command
# of `@module` reads the build's module list (`go version -m`), for a program with no --version.
programs=(
    "k8s|kube-apiserver|k8s.io/kubernetes/cmd/kube-apiserver|--version|Kubernetes $release"
    "k8s|kube-controller-manager|k8s.io/kubernetes/cmd/kube-controller-manager|--version|Kubernetes $release"
    "k8s|kube-scheduler|k8s.io/kubernetes/cmd/kube-scheduler|--version|Kubernetes $release"
    "k8s|kubectl|k8s.io/kubernetes/cmd/kubectl|version --client|Client Version: $release"
    "k8s|etcd|go.etcd.io/etcd/server/v3|--version|etcd Version: 3.7.0"
    "helm|helm|helm.sh/helm/v4/cmd/helm|version --short|v4.3.2|-X helm.sh/helm/v4/internal/version.version=v4.3.2"
    "coredns|coredns|github.com/coredns/coredns|-version|CoreDNS-1.15.0"
    "kueue|kueue|sigs.k8s.io/kueue/cmd/kueue|@module|sigs.k8s.io/kueue	v0.17.0|-X sigs.k8s.io/kueue/pkg/version.GitVersion=v0.17.0"
)
# Built only when asked for (--with NAME).
optional_programs=(
    "kwok|kwok|sigs.k8s.io/kwok/cmd/kwok|--version|kwok version v0.8.0"
)
for row in "${optional_programs[@]}"; do
    IFS='|' read -r _ name _ <<<"$row"
    [[ "$optional" == *" $name "* ]] && programs+=("$row")
done

reports() { # binary check expected
    if [ "$2" = @module ]; then
        go version -m "$1" 2>&1 | grep -F "$3" >/dev/null
    else
        # shellcheck disable=SC2086
        "$1" $2 2>&1 | grep -F "$3" >/dev/null
    fi
}

# One stamp per group: the hash of its go.mod and go.sum; a changed pin rebuilds the group.
stamp_of() { cat "tools/$1/go.mod" "tools/$1/go.sum" | sha256sum | cut -c1-16; }

fresh() { # name check expected group
    [ -x "$bin/$1" ] || return 1
    [ "$(cat "$bin/.$1.stamp" 2>/dev/null)" = "$(stamp_of "$4")" ] || return 1
    reports "$bin/$1" "$2" "$3"
}

built=0
for row in "${programs[@]}"; do
    IFS='|' read -r group name pkg check expected extra <<<"$row"
    if fresh "$name" "$check" "$expected" "$group"; then
        continue
    fi
    ldflags="-s -w"
    [ "$group" = k8s ] && ldflags="$k8s_ldflags"
    [ -n "$extra" ] && ldflags+=" $extra"
    echo >&2 "k8s-tools: building $name ($pkg, pinned in tools/$group/go.mod) into $bin"
    start=$(date +%s)
    (cd "tools/$group" && go build -ldflags "$ldflags" -o "$bin/$name.tmp" "$pkg")
    mv "$bin/$name.tmp" "$bin/$name"
    if ! reports "$bin/$name" "$check" "$expected"; then
        echo "k8s-tools: $bin/$name does not report '$expected':" >&2
        if [ "$check" = @module ]; then go version -m "$bin/$name" | head -5 >&2 || true; else
            # shellcheck disable=SC2086
            "$bin/$name" $check 2>&1 | head -5 >&2 || true
        fi
        exit 1
    fi
    stamp_of "$group" >"$bin/.$name.stamp"
    echo >&2 "k8s-tools: built $name in $(($(date +%s) - start)) s"
    built=$((built + 1))
done
[ "$built" = 0 ] && echo >&2 "k8s-tools: Kubernetes $release control plane, etcd, helm, CoreDNS and Kueue ready in $bin"
echo "$bin"
