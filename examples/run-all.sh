#!/usr/bin/env bash
# Builds the `early-stop` example callback in Rust, Python, JavaScript and C, then for each:
#   1. `trainrt check` (imports and their verdicts, subscriptions) and a check with a misspelled
#      parameter, which init must reject naming the known ones;
#   2. `trainrt replay examples/events/digits.events.jsonl`, whose decisions and log lines must be
#      byte-for-byte the same in every language (the Rust one is the reference);
#   3. a short `trainrt run` of 8 epochs, then `trainrt run --resume` to 10 epochs: the callback
#      stops training at epoch 8 only if its state survived the checkpoint (restore-state).
# Exits non-zero on any build failure or difference, printing the diff.
#
# Installs what is missing: cargo tools and a Python venv under $TRAINRT_TOOLS (default
# ~/.cache/trainrt-tools), npm packages in callbacks/js/node_modules, Debian's clang, lld and
# wasi-libc with apt-get. Uses $TRAINRT if set; otherwise builds trainrt (debug profile) into
# $CARGO_TARGET_DIR (default ~/.cache/trainrt-target).
#
#   examples/run-all.sh                  # everything
#   examples/run-all.sh rust python      # some languages only
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
TOOLS=${TRAINRT_TOOLS:-$HOME/.cache/trainrt-tools}
EVENTS=$HERE/events/digits.events.jsonl
NAME=early-stop # every language builds callbacks/<lang>/build/early-stop.wasm

# Pinned tool versions (npm packages are pinned in callbacks/js/package-lock.json).
WASM_TOOLS_VERSION=1.254.2      # wasm-tools 1.254 = wit-component 0.254, what trainrt uses
WIT_BINDGEN_VERSION=0.60.0      # the wit-bindgen the Rust SDK uses
COMPONENTIZE_PY_VERSION=0.25.1
ADAPTER_VERSION=49.0.5          # wasmtime 49, trainrt's engine
ADAPTER_SHA256=1636fedfc2efc9d8bbc6cdcd26cb1e13045183c2089b5debd161e3b56524f4c0

LANGS=("$@")
[ ${#LANGS[@]} -gt 0 ] || LANGS=(rust python js c)
for lang in "${LANGS[@]}"; do
    case $lang in rust | python | js | c) ;; *) echo "unknown language '$lang' (rust, python, js, c)" >&2; exit 2 ;; esac
done

step() { printf '\n==> %s\n' "$*"; }
has_lang() { local l; for l in "${LANGS[@]}"; do [ "$l" = "$1" ] && return 0; done; return 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- trainrt ------------------------------------------------------------------------------------
if [ -z "${TRAINRT:-}" ]; then
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/trainrt-target}
    step "building trainrt (debug profile) into $CARGO_TARGET_DIR"
    rustup target add wasm32-unknown-unknown >/dev/null
    (cd "$ROOT" && cargo build -p trainrt-cli)
    TRAINRT=$CARGO_TARGET_DIR/debug/trainrt
fi
[ -x "$TRAINRT" ] || { echo "TRAINRT=$TRAINRT is not an executable" >&2; exit 1; }

# --- toolchains ---------------------------------------------------------------------------------
export PATH=$TOOLS/bin:$PATH
cargo_tool() { # cargo_tool BINARY CRATE VERSION [cargo install flags...]
    local bin=$1 crate=$2 version=$3
    shift 3
    if ! "$TOOLS/bin/$bin" --version 2>/dev/null | grep -qx "$crate $version\|$bin $version"; then
        step "installing $crate $version into $TOOLS"
        cargo install "$crate" --version "$version" --locked --root "$TOOLS" "$@"
    fi
}
cargo_tool wasm-tools wasm-tools "$WASM_TOOLS_VERSION" \
    --no-default-features --features component,validate,print,parse,metadata,strip

if has_lang rust; then
    rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
fi

if has_lang python; then
    VENV=$TOOLS/venv
    if [ "$("$VENV/bin/componentize-py" --version 2>/dev/null)" != "componentize-py $COMPONENTIZE_PY_VERSION" ]; then
        step "installing componentize-py $COMPONENTIZE_PY_VERSION into $VENV"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet "componentize-py==$COMPONENTIZE_PY_VERSION"
    fi
    export COMPONENTIZE_PY=$VENV/bin/componentize-py
fi

if has_lang js; then
    JS=$HERE/callbacks/js
    if [ ! -f "$JS/node_modules/.package-lock.json" ] || [ "$JS/package-lock.json" -nt "$JS/node_modules/.package-lock.json" ]; then
        step "npm ci in $JS"
        (cd "$JS" && npm ci --no-audit --no-fund)
    fi
fi

if has_lang c; then
    cargo_tool wit-bindgen wit-bindgen-cli "$WIT_BINDGEN_VERSION" --no-default-features --features c
    if ! command -v clang >/dev/null || ! command -v wasm-ld >/dev/null ||
        [ ! -f /usr/lib/wasm32-wasi/libc.a ] ||
        ! compgen -G '/usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a' >/dev/null; then
        step "installing clang, lld and wasi-libc (Debian packages)"
        as_root apt-get update -qq
        # No clang yet on a fresh machine: under pipefail its absence must not end the script.
        llvm=$({ clang --version 2>/dev/null || true; } | sed -n 's/.*clang version \([0-9]*\).*/\1/p' | head -n1)
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang lld wasi-libc \
            "libclang-rt-${llvm:-14}-dev-wasm32"
    fi
    ADAPTER=$TOOLS/adapters/wasi_snapshot_preview1.reactor-$ADAPTER_VERSION.wasm
    if [ ! -f "$ADAPTER" ]; then
        step "fetching the WASI preview1 reactor adapter (crate wasi-preview1-component-adapter-provider $ADAPTER_VERSION)"
        crate=wasi-preview1-component-adapter-provider
        tmp=$(mktemp -d)
        curl -sSfL -o "$tmp/adapter.crate" "https://static.crates.io/crates/$crate/$crate-$ADAPTER_VERSION.crate"
        echo "$ADAPTER_SHA256  $tmp/adapter.crate" | sha256sum -c --quiet
        tar -xzf "$tmp/adapter.crate" -C "$tmp" "$crate-$ADAPTER_VERSION/artefacts/wasi_snapshot_preview1.reactor.wasm"
        mkdir -p "$(dirname "$ADAPTER")"
        mv "$tmp/$crate-$ADAPTER_VERSION/artefacts/wasi_snapshot_preview1.reactor.wasm" "$ADAPTER"
        rm -rf "$tmp"
    fi
    export WASI_ADAPTER=$ADAPTER
fi

# --- build --------------------------------------------------------------------------------------
for lang in "${LANGS[@]}"; do
    step "building $lang"
    start=$SECONDS
    "$HERE/callbacks/$lang/build.sh"
    wasm=$HERE/callbacks/$lang/build/$NAME.wasm
    printf '%s: %s bytes, built in %ss\n' "$lang" "$(wc -c <"$wasm")" $((SECONDS - start))
done

# The --sandbox flags a component needs: inert_wasi if it imports wasi:filesystem or wasi:sockets,
# and compile limits above the defaults (5 s, 256 MiB) for the components that carry a language
# runtime (Python's and JavaScript's: 13-18 MB, 19-38 s of CPU time to compile, once).
sandbox_args() {
    local flags=()
    if wasm-tools component wit "$1" | grep -Eq '^ *import wasi:(filesystem|sockets)/'; then
        flags+=(inert_wasi=true)
    fi
    case $2 in
        python | js) flags+=(compile_cpu_time=120s compile_memory_bytes=1GiB) ;;
    esac
    if [ ${#flags[@]} -gt 0 ]; then
        local IFS=,
        echo "--sandbox $NAME:${flags[*]}"
    fi
}

# --- check, replay, run -------------------------------------------------------------------------
failed=0
fail() { echo "FAILED: $*" >&2; failed=1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for lang in "${LANGS[@]}"; do
    wasm=$HERE/callbacks/$lang/build/$NAME.wasm
    out=$work/$lang
    mkdir -p "$out"
    # shellcheck disable=SC2207 # the flags are words without spaces
    sandbox=($(sandbox_args "$wasm" "$lang"))

    step "$lang: trainrt check"
    start=$(date +%s%N)
    "$TRAINRT" check "${sandbox[@]}" "$wasm:patience=3" | tee "$out/check.txt" || fail "$lang: trainrt check"
    echo "($(( ($(date +%s%N) - start) / 1000000 )) ms)"
    # A misspelled parameter must be rejected by init (exit 2), naming the known parameters.
    set +e
    "$TRAINRT" check "${sandbox[@]}" "$wasm:patiense=3" >/dev/null 2>"$out/bad-param.txt"
    rc=$?
    set -e
    grep -q "unknown parameter 'patiense'; known parameters: patience, min_delta" "$out/bad-param.txt" && [ $rc = 2 ] ||
        { cat "$out/bad-param.txt" >&2; fail "$lang: a misspelled parameter was not rejected as expected (exit $rc)"; }

    step "$lang: trainrt replay $(basename "$EVENTS")"
    "$TRAINRT" replay "${sandbox[@]}" "$EVENTS" --callback "$wasm:patience=3" >"$out/decisions.jsonl" 2>"$out/log.txt" ||
        { cat "$out/log.txt" >&2; fail "$lang: trainrt replay"; }
    grep '"stop-training"' "$out/decisions.jsonl" | head -n1 || fail "$lang: no stop-training decision in the replay"

    step "$lang: trainrt run (8 epochs), then --resume to 10"
    run=$out/run
    "$TRAINRT" run "${sandbox[@]}" --data digits --lr 0.5 --seed 42 --epochs 8 --run-dir "$run" \
        --callback "$wasm:patience=3,min_delta=0.001" >"$out/run.txt" 2>&1 ||
        { cat "$out/run.txt" >&2; fail "$lang: trainrt run"; }
    "$TRAINRT" run "${sandbox[@]}" --resume "$run" --epochs 10 >>"$out/run.txt" 2>&1 ||
        { cat "$out/run.txt" >&2; fail "$lang: trainrt run --resume"; }
    tail -n 3 "$out/run.txt"
    # Only the restored counters (wait=2 after epoch 7) make epoch 8 the third epoch without an
    # improvement larger than min_delta.
    python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(s["outcome"], "|", s.get("reason"))' \
        "$run/summary.json" >"$out/outcome.txt"
    cat "$out/outcome.txt"
    grep -qx 'stopped | early-stop: val_loss did not improve for 3 epochs (best 0.5646 at epoch 5)' "$out/outcome.txt" ||
        fail "$lang: the resumed run did not stop at epoch 8 as expected"
done

# --- compare ------------------------------------------------------------------------------------
step "comparing decisions, log lines, init errors and run outcomes across: ${LANGS[*]}"
ref=${LANGS[0]}
for lang in "${LANGS[@]:1}"; do
    for file in decisions.jsonl log.txt bad-param.txt outcome.txt; do
        diff -u --label "$ref/$file" --label "$lang/$file" "$work/$ref/$file" "$work/$lang/$file" ||
            fail "$lang differs from $ref in $file"
    done
done

if [ $failed != 0 ]; then
    echo "run-all: FAILED" >&2
    exit 1
fi
printf '\nrun-all: %s built, checked, replayed identically (%s decisions) and ran\n' \
    "${LANGS[*]}" "$(wc -l <"$work/$ref/decisions.jsonl")"
