#!/usr/bin/env bash
# What each class of hostile callback costs a run under the default limits: a guest that stays
# inside every per-call limit (or, for the compile bomb, never gets to run) against the same run
# without callbacks. Digits, 3 epochs, the release binary; wall time, peak resident memory and the
# run directory's size, medians of RUNS runs (default 5), and what stopped the guest; the two
# guests that cost time on every call again over 30 epochs, where their time share applies.
# Prints a markdown table for BENCHMARKS.md.
#
#   scripts/bench-budgets.sh [RUNS]
#
# The guests are written by two ignored tests (run_budgets::write_benchmark_guests and
# bounded_compile::write_benchmark_bomb) from the same WAT builders the tests use.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${1:-5}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
export RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-$(nproc)}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo build --quiet --release -p trainrt-cli --bin trainrt
bin="$CARGO_TARGET_DIR/release/trainrt"
TRAINRT_BENCH_DIR="$work/guests" cargo test --quiet -p trainrt-cli --test all \
    run_budgets::write_benchmark_guests -- --ignored >/dev/null
bomb=$(cargo test --quiet -p trainrt-cli --test all bounded_compile::write_benchmark_bomb \
    -- --ignored --nocapture | grep -o '/[^ ]*compile-bomb.wasm')
cp "$bomb" "$work/guests/compile-bomb.wasm"

# One row: the class, then the median wall time (s), peak RSS (MiB) and run-dir size (KiB) of
# `trainrt run` with the given arguments, and the faults the run recorded.
row() {
    local name=$1
    shift
    local samples=()
    for _ in $(seq "$runs"); do
        rm -rf "$work/run" "$work/cache"
        TRAINRT_CACHE_DIR="$work/cache" /usr/bin/time -f '%e %M' -o "$work/time" \
            "$bin" run --epochs "$epochs" --run-dir "$work/run" "$@" >/dev/null 2>"$work/stderr" || true
        # The last line: GNU time puts "Command exited with non-zero status N" before it.
        read -r wall rss < <(tail -n 1 "$work/time")
        local size=0
        [ -d "$work/run" ] && size=$(du -sk "$work/run" | cut -f1)
        samples+=("$wall $rss $size")
    done
    local faults="-"
    if [ -s "$work/run/faults.jsonl" ]; then
        faults=$(grep -o '"kind":"[a-z-]*"' "$work/run/faults.jsonl" | cut -d'"' -f4 | sort | uniq -c \
            | awk '{printf "%s%s x%s", sep, $2, $1; sep=", "}')
    elif grep -q compile-limit "$work/stderr"; then
        faults="compile-limit (refused)"
    fi
    printf '%s\n' "${samples[@]}" | awk -v name="$name" -v faults="$faults" -v epochs="$epochs" '
        { w[NR] = $1; r[NR] = $2; s[NR] = $3 }
        END {
            n = asort(w); asort(r); asort(s); m = int((n + 1) / 2)
            printf "| %s | %d | %.2f | %.0f | %d | %s |\n", name, epochs, w[m], r[m] / 1024, s[m], faults
        }'
}

echo "| guest | epochs | wall (s) | peak RSS (MiB) | run dir (KiB) | stopped by |"
echo "|---|---|---|---|---|---|"
epochs=3
row "none (baseline)"
for guest in host-work fuel-just-under new-tags save-every-batch validate-every-batch \
    restore-every-batch new-metric-names decisions-every-batch; do
    row "$guest" --callback "$work/guests/$guest.wasm"
done
row "compile-bomb" --callback "$work/guests/compile-bomb.wasm"
# The guests that cost time on every call, over a run long enough for the time share to apply.
epochs=30
row "none (baseline)"
for guest in host-work fuel-just-under; do
    row "$guest" --callback "$work/guests/$guest.wasm"
done
