#!/usr/bin/env bash
# Checks that a refactoring left training unchanged: trains one Experiment with the programs of
# git revision REV and with those of the working tree, then compares every trial's metrics.jsonl
# (the losses of every step and every evaluation's scores) byte for byte.
#
#   scripts/same_metrics.sh REV [EXPERIMENT]     (default: experiments/quickstart.yaml)
#
# Both builds share the target folder (only the workspace's crates are built twice); each one's
# binaries are copied aside before the next build replaces them. Everything is written under
# $CARGO_TARGET_DIR/same-metrics (or SAME_METRICS_DIR). Exits 1 when a file differs or is
# missing on one side, naming it and the first differing line.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: scripts/same_metrics.sh REV [EXPERIMENT]" >&2; exit 2; }
rev=$1
experiment=$(realpath "${2:-experiments/quickstart.yaml}")
# shellcheck source=scripts/env.sh
source scripts/env.sh
out=${SAME_METRICS_DIR:-$CARGO_TARGET_DIR/same-metrics}
rm -rf "$out"
mkdir -p "$out"
git rev-parse --verify --quiet "$rev^{commit}" >/dev/null || { echo "same_metrics: no revision $rev" >&2; exit 2; }
git worktree add --detach --quiet "$out/tree" "$rev"
trap 'git worktree remove --force "$out/tree" 2>/dev/null || true' EXIT

build() { # folder, where the binaries go
    echo "== building $1"
    (cd "$1" && cargo build --release --workspace $ORCHESTRA_FEATURES --bin orchestra --bin orchestra-worker)
    mkdir -p "$2"
    cp "$CARGO_TARGET_DIR/release/orchestra" "$CARGO_TARGET_DIR/release/orchestra-worker" "$2/"
}
build "$out/tree" "$out/before/bin"
build "$PWD" "$out/after/bin"

for side in before after; do
    echo "== training with the $side programs"
    "$out/$side/bin/orchestra" run "$experiment" \
        --workdir "$out/$side/run" \
        --store "file://$out/$side/store" \
        --worker "$out/$side/bin/orchestra-worker" >"$out/$side/run.log" 2>&1 ||
        { echo "same_metrics: the $side run failed; see $out/$side/run.log" >&2; exit 1; }
done

differ=0
compared=0
while IFS= read -r -d '' before; do
    rel=${before#"$out/before/store/"}
    after="$out/after/store/$rel"
    compared=$((compared + 1))
    if [ ! -f "$after" ]; then
        echo "MISSING after: $rel"
        differ=1
    elif ! cmp -s "$before" "$after"; then
        line=$(cmp "$before" "$after" | sed -n 's/.* line \([0-9]*\).*/\1/p')
        echo "DIFFERS: $rel (first at line $line)"
        echo "  before: $(sed -n "${line}p" "$before" | cut -c1-200)"
        echo "  after:  $(sed -n "${line}p" "$after" | cut -c1-200)"
        differ=1
    else
        echo "same: $rel ($(wc -l <"$before") lines)"
    fi
done < <(find "$out/before/store" -name metrics.jsonl -print0 | sort -z)
extra=$(cd "$out/after/store" && find . -name metrics.jsonl | while read -r f; do
    [ -f "$out/before/store/${f#./}" ] || echo "${f#./}"; done)
[ -z "$extra" ] || { echo "MISSING before: $extra"; differ=1; }
[ "$compared" -gt 0 ] || { echo "same_metrics: no metrics.jsonl was written" >&2; exit 1; }
echo "$compared metrics files compared between $rev and the working tree"
exit $differ
