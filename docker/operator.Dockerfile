# The operator: a static (musl) binary on distroless, non-root. No libtorch: the operator
# crate does not depend on the worker.
#   docker build -f docker/operator.Dockerfile -t orchestra-operator:dev .
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target x86_64-unknown-linux-musl -p orchestra-operator --bin orchestra-operator \
    && cp target/x86_64-unknown-linux-musl/release/orchestra-operator /orchestra-operator

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /orchestra-operator /usr/local/bin/orchestra-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/orchestra-operator"]
