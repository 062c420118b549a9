#!/usr/bin/env bash
# Builds build/early-stop.wasm from early-stop.c:
#   1. `wit-bindgen c` generates bindings/ (callback_world.{c,h} and the component-type object that
#      carries the WIT world into the module);
#   2. Debian's clang compiles for wasm32-wasi as a *reactor* (a library: no main) against
#      wasi-libc, linking with wasm-ld;
#   3. `wasm-tools component new` makes it a component. Any WASI preview1 imports the module keeps
#      are adapted to WASI 0.2 by the reactor adapter ($WASI_ADAPTER, from the crate
#      wasi-preview1-component-adapter-provider that matches trainrt's wasmtime).
set -euo pipefail
cd "$(dirname "$0")"
WIT_BINDGEN=${WIT_BINDGEN:-wit-bindgen}
WASM_TOOLS=${WASM_TOOLS:-wasm-tools}
CC=${CC:-clang}
: "${WASI_ADAPTER:?set WASI_ADAPTER to wasi_snapshot_preview1.reactor.wasm (examples/run-all.sh fetches it)}"

rm -rf bindings
"$WIT_BINDGEN" c ../../../wit --world callback-world --out-dir bindings >/dev/null
mkdir -p build
"$CC" --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Wextra -Werror \
    -Wno-unused-parameter -Ibindings \
    early-stop.c bindings/callback_world.c bindings/callback_world_component_type.o \
    -o build/early-stop.core.wasm
"$WASM_TOOLS" component new build/early-stop.core.wasm \
    --adapt wasi_snapshot_preview1="$WASI_ADAPTER" -o build/early-stop.wasm
