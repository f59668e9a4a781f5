# Orchestra: one-command setup, build, demo, tests and benchmarks.
# Every target that compiles runs `setup` first (idempotent), so a fresh clone needs nothing else.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
ENV := source scripts/env.sh &&

.PHONY: setup build demo test lint bench fuzz clean-runs

setup:
	@scripts/setup.sh

build: setup
	$(ENV) cargo build --release --workspace $$ORCHESTRA_FEATURES

demo: build
	$(ENV) scripts/demo.sh

test: setup
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

clean-runs:
	rm -rf runs bench-results
