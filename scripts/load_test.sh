#!/usr/bin/env bash
# The segmentation service under a bounded load on loopback: one service per batching setting
# (--max-batch 1: one forward pass per request; 16: concurrent requests' codes batched), each
# loaded 1 and 8 requests at a time (BATCHES and CONCURRENCY override the lists). TLS with a
# throwaway self-signed certificate when openssl is there, plain HTTP on loopback otherwise.
# The client is orchestra-edge (C in pure Rust), sending the bitstreams of 16 held-out images of
# LOAD_TEST_DATASET (default: the demo's synthetic lesions at 128 px), written by the worker.
# Usage: scripts/load_test.sh BINARY_DIR MODEL OUT.jsonl [extra serve arguments, e.g. --device cuda]
# (BINARY_DIR holds orchestra-worker and orchestra-edge.)
set -euo pipefail
bins=$1 model=$2 out=$3
shift 3
bin="$bins/orchestra-worker" edge="$bins/orchestra-edge"
dir=$(mktemp -d)
server=""
cleanup() {
    if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
    rm -rf "$dir"
}
trap cleanup EXIT
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/tokens"
tls=(--insecure) ca=() scheme=http
if command -v openssl >/dev/null; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -addext "basicConstraints=critical,CA:FALSE" \
        -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
    tls=(--tls-cert "$dir/cert.pem" --tls-key "$dir/key.pem") ca=(--ca-cert "$dir/cert.pem") scheme=https
fi
: > "$out"
dataset="${LOAD_TEST_DATASET:-synthetic://lesion?n=64&size=128&seed=1&val=16}"
side=$(sed -n 's/.*[?&]size=\([0-9]*\).*/\1/p' <<< "$dataset")
"$bin" samples --dataset "$dataset" --size "${side:-128}" --count 16 -o "$dir/images" > /dev/null
for max_batch in ${BATCHES:-1 16}; do
    "$bin" serve --model "$model" --listen 127.0.0.1:0 "${tls[@]}" --tokens "$dir/tokens" \
        --max-batch "$max_batch" "$@" > "$dir/serve.log" 2>&1 &
    server=$!
    for _ in $(seq 100); do
        grep -q '^serving' "$dir/serve.log" && break
        kill -0 "$server" 2>/dev/null || { cat "$dir/serve.log"; exit 1; }
        sleep 0.1
    done
    port=$(sed -n 's/^serving [a-z]*:\/\/[0-9.]*:\([0-9]*\).*/\1/p' "$dir/serve.log")
    [ -n "$port" ] || { echo "the service did not start:"; cat "$dir/serve.log"; exit 1; }
    for concurrency in ${CONCURRENCY:-1 8}; do
        echo -n "max batch $max_batch: "
        report=$("$edge" load-test --server "$scheme://localhost:$port" --model "$model" \
            --token-file "$dir/tokens" "${ca[@]}" --requests 400 --concurrency "$concurrency" "$dir/images")
        echo "$report" | head -1
        echo "{\"max_batch\": $max_batch, \"serve_args\": \"$*\", \"tls\": $([ $scheme = https ] && echo true || echo false), \"report\": $(echo "$report" | tail -1)}" >> "$out"
    done
    kill "$server"; wait "$server" 2>/dev/null || true
    server=""
done
echo "written: $out"
