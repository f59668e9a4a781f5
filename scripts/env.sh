# Sourced by the Makefile's recipes and by scripts: where libtorch is, for building and running.
venv="${ORCHESTRA_VENV:-$HOME/.cache/orchestra/venv}"
LIBTORCH="$(echo "$venv"/lib/python3*/site-packages/torch)"
export LIBTORCH
export LIBTORCH_CXX11_ABI=1
export LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# One cargo cache per machine, outside the clone, so that CI's fresh clones build incrementally.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/orchestra/target}"
