# Orchestra: one-command setup, build, demo, tests and benchmarks.
# Every target that compiles runs `setup` first (idempotent), so a fresh clone needs nothing else.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
ENV := source scripts/env.sh &&

.PHONY: setup k8s-tools build demo test lint bench fuzz cluster cluster-down clean-runs

setup:
	@scripts/setup.sh

# The upstream Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl) and helm, built from their Go modules as pinned in tools/
# (cached in ~/.cache/orchestra/k8s/<release>; the first build takes a while, see the README).
k8s-tools:
	@scripts/k8s_tools.sh >/dev/null

build: setup
	$(ENV) cargo build --release --workspace $$ORCHESTRA_FEATURES

demo: build
	$(ENV) scripts/demo.sh

test: setup k8s-tools
	cargo fmt --all -- --check
	$(ENV) cargo test --workspace $$ORCHESTRA_FEATURES --no-fail-fast
	scripts/test_kernel_paths.sh

lint: setup
	cargo fmt --all -- --check
	$(ENV) cargo clippy --workspace --all-targets $$ORCHESTRA_FEATURES --features orchestra-worker/nccl -- -D warnings

bench: build
	$(ENV) scripts/bench.sh

# Ten million generated inputs through the decoder of the demo's D4 model (run `make demo` first).
fuzz: build
	$(ENV) scripts/fuzz.sh

# A real control plane on this machine with a node agent and the operator (see the README).
CLUSTER_DIR ?= $(HOME)/.cache/orchestra/cluster
cluster: build k8s-tools
	$(ENV) CLUSTER_NODES=$${CLUSTER_NODES:-1} CLUSTER_OPERATOR=1 scripts/cluster.sh up $(CLUSTER_DIR)
	@echo "cluster: eval \"\$$(scripts/cluster.sh env $(CLUSTER_DIR))\"; kubectl get nodes   (make cluster-down stops it)"

cluster-down:
	scripts/cluster.sh down $(CLUSTER_DIR)

clean-runs:
	rm -rf runs bench-results
