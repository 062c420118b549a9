#!/usr/bin/env bash
# Builds build/early-stop.wasm from early-stop.js with componentize-js (pinned in package.json and
# package-lock.json). Every optional WASI feature of the engine is disabled (stdio, random,
# clocks, http, fetch-event), so the component imports only the trainrt contract.
set -euo pipefail
cd "$(dirname "$0")"
[ -d node_modules ] || npm ci --no-audit --no-fund
npm run --silent build
