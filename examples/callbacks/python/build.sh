#!/usr/bin/env bash
# Builds build/early-stop.wasm from app.py with componentize-py. `--stub-wasi` replaces every WASI
# import with a trapping stub, so the component imports only the trainrt contract (Python's
# print() would trap: use the host's log import instead).
set -euo pipefail
cd "$(dirname "$0")"
COMPONENTIZE_PY=${COMPONENTIZE_PY:-componentize-py}
mkdir -p build
PYTHONDONTWRITEBYTECODE=1 "$COMPONENTIZE_PY" -d ../../../wit -w callback-world componentize --stub-wasi app -o build/early-stop.wasm
