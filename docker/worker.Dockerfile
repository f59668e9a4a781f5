# The worker, with libtorch 2.11 from the PyPI wheel as in `make setup`.
#   docker build -f docker/worker.Dockerfile --build-arg VARIANT=cpu  -t orchestra-worker:dev .
#   docker build -f docker/worker.Dockerfile --build-arg VARIANT=cuda -t orchestra-worker:dev-cuda .
# cpu: the CPU wheel (download.pytorch.org/whl/cpu), no CUDA libraries at all.
# cuda: the default PyPI wheel (CUDA 13) with its CUDA and NCCL dependencies, the worker built
#       with the `nccl` feature; the node needs the NVIDIA driver (device plugin).
ARG VARIANT=cpu

FROM rust:1-bookworm AS build
ARG VARIANT
RUN apt-get update && apt-get install -y --no-install-recommends python3-venv && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv \
    && if [ "$VARIANT" = cuda ]; then \
         /opt/venv/bin/pip install --no-cache-dir torch==2.11.0; \
       else \
         /opt/venv/bin/pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.11.0; \
       fi
WORKDIR /src
COPY . .
RUN export LIBTORCH="$(echo /opt/venv/lib/python3*/site-packages/torch)" LIBTORCH_CXX11_ABI=1 \
    && features="" && if [ "$VARIANT" = cuda ]; then features="--features orchestra-worker/nccl"; fi \
    && cargo build --release --locked -p orchestra-worker $features \
    && cp target/release/orchestra-worker /orchestra-worker \
    # libtorch and, for CUDA, the nvidia/* libraries it links, keeping the wheel's layout
    # (libtorch_cuda finds them through its rpath $ORIGIN/../../nvidia).
    && mkdir -p /opt/site/torch /opt/site/nvidia && cp -a "$LIBTORCH/lib" /opt/site/torch/lib \
    && if [ -d /opt/venv/lib/python3*/site-packages/nvidia ]; then cp -a /opt/venv/lib/python3*/site-packages/nvidia/. /opt/site/nvidia/; fi

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/site /opt/site
COPY --from=build /orchestra-worker /usr/local/bin/orchestra-worker
# cudarc opens NCCL as libnccl.so: the very library libtorch_cuda loads.
RUN mkdir -p /opt/nccl && if [ -e /opt/site/nvidia/nccl/lib/libnccl.so.2 ]; then \
      ln -s /opt/site/nvidia/nccl/lib/libnccl.so.2 /opt/nccl/libnccl.so; fi
ENV LD_LIBRARY_PATH=/opt/site/torch/lib:/opt/nccl
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/orchestra-worker"]
