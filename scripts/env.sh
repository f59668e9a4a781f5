# Sourced by the Makefile's recipes and by scripts: where libtorch is, for building and running.
venv="${ORCHESTRA_VENV:-$HOME/.cache/orchestra/venv}"
LIBTORCH="$(echo "$venv"/lib/python3*/site-packages/torch)"
export LIBTORCH
export LIBTORCH_CXX11_ABI=1
export LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# One cargo cache per machine, outside the clone, so that CI's fresh clones build incrementally.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/orchestra/target}"
# MPI (data-parallel training on CPUs) when Open MPI and libclang are installed (make setup):
# the worker's `mpi` feature, and the operator's, which runs its MPI gang test. Without them
# the MPI tests are reported as ignored, with the reason.
if [ -z "${ORCHESTRA_FEATURES+x}" ]; then
    ORCHESTRA_FEATURES="" ORCHESTRA_WORKER_FEATURES=""
    if command -v mpicc >/dev/null 2>&1 && ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1; then
        ORCHESTRA_FEATURES="--features orchestra-worker/mpi,orchestra-operator/mpi"
        ORCHESTRA_WORKER_FEATURES="--features mpi"
    fi
fi
export ORCHESTRA_FEATURES ORCHESTRA_WORKER_FEATURES="${ORCHESTRA_WORKER_FEATURES-}"
# Open MPI refuses to start as root (CI containers) unless told.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# No incremental caches: they grow by gigabytes per session on a shared cache and CI builds
# from clean clones anyway.
export CARGO_INCREMENTAL=0
