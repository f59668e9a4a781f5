#!/usr/bin/env bash
# One-command setup: a Python virtual environment holding libtorch 2.11 (the PyPI wheel, the
# lean way: torch without its 4 GB of CUDA dependencies, plus the two CUDA runtime libraries
# that libtorch_cpu.so links against even on the CPU). Idempotent: a second run only checks.
#
# The environment lives outside the clone (ORCHESTRA_VENV, default ~/.cache/orchestra/venv) and
# `.venv` links to it, so that every clone on a machine shares one install and the cargo cache
# (CARGO_TARGET_DIR) keeps pointing at a libtorch that exists.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${ORCHESTRA_VENV:-$HOME/.cache/orchestra/venv}"
python="${PYTHON:-python3}"
stamp="$venv/.orchestra-setup-v1"

torch_pkgs=(torch==2.11.0 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85)

if [ ! -f "$stamp" ]; then
    echo "setup: creating $venv"
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    echo "setup: installing ${torch_pkgs[*]} (about 0.55 GB download)"
    "$venv/bin/python" -m pip install -q --no-deps "${torch_pkgs[@]}"
    touch "$stamp"
fi

# Debian's packages, through apt as root or passwordless sudo: Open MPI for data-parallel
# training on CPUs (the worker's `mpi` feature; bindgen needs libclang), and what
# scripts/cluster.sh runs (openssl for the certificates, curl for health checks, iproute2 for
# the pod network), and headless Chromium with its WebDriver for the dashboard's browser test.
mpi_pkgs=(libopenmpi-dev openmpi-bin libclang-dev)
cluster_pkgs=(openssl curl iproute2 chromium chromium-driver)
missing=()
dpkg -s "${mpi_pkgs[@]}" >/dev/null 2>&1 || missing+=("${mpi_pkgs[@]}")
for pkg in "${cluster_pkgs[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt=()
    if [ "$(id -u)" = 0 ]; then apt=(apt-get); elif sudo -n true 2>/dev/null; then apt=(sudo apt-get); fi
    if [ ${#apt[@]} -gt 0 ] && command -v apt-get >/dev/null; then
        echo "setup: installing ${missing[*]} (MPI training on CPUs; the local control plane; the browser test)"
        "${apt[@]}" update -qq
        DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -qq "${missing[@]}" >/dev/null
    else
        echo "setup: ${missing[*]} are missing and apt-get needs root: without MPI the worker is" \
             "built without it and the data-parallel tests are skipped; without openssl and curl" \
             "scripts/cluster.sh cannot start; without iproute2 its pods have no network of their own;" \
             "without chromium and chromium-driver the dashboard's browser test is skipped" >&2
    fi
fi

# The S3-compatible server the storage tests start on loopback.
if [ ! -x "$venv/bin/moto_server" ]; then
    echo "setup: installing moto[server] (a loopback S3 server for the tests)"
    "$venv/bin/python" -m pip install -q "moto[server]==5.2.1"
fi

# TensorBoard, whose own reader a test reads the trials' event files back with (and which users
# point at a store).
if ! "$venv/bin/python" -c "import tensorboard" 2>/dev/null; then
    echo "setup: installing tensorboard (reads the trials' event files)"
    "$venv/bin/python" -m pip install -q "tensorboard==2.21.0"
fi

if [ "$(readlink .venv 2>/dev/null || true)" != "$venv" ]; then
    rm -rf .venv
    ln -s "$venv" .venv
fi

# `import torch` would need the CUDA libraries left out above; the Rust build only needs the
# headers and the shared libraries, so check those files instead.
torch_dir="$(echo "$venv"/lib/python3*/site-packages/torch)"
for f in include/torch/csrc/api/include/torch/torch.h lib/libtorch_cpu.so lib/libc10.so; do
    [ -e "$torch_dir/$f" ] || { echo "setup: $torch_dir/$f is missing; remove $venv and rerun" >&2; exit 1; }
done
echo "setup: libtorch $(cat "$torch_dir/version.py" | sed -n "s/^__version__ = '\(.*\)'/\1/p") at $torch_dir"
