#!/usr/bin/env bash
# Builds build/early-stop.wasm: cargo for wasm32-unknown-unknown, then `wasm-tools component new`
# turns the core module (which carries the WIT world in a custom section) into a component.
set -euo pipefail
cd "$(dirname "$0")"
WASM_TOOLS=${WASM_TOOLS:-wasm-tools}
cargo build --release --target wasm32-unknown-unknown --target-dir target --locked
mkdir -p build
"$WASM_TOOLS" component new target/wasm32-unknown-unknown/release/early_stop.wasm -o build/early-stop.wasm
