#!/usr/bin/env bash
# Runs the guest SDK's unit tests under Miri, which checks the SDK's unsafe code (TextWriter and
# its fixed-size copies in guest-callbacks/sdk/src/fast_format/text_writer.rs) for undefined
# behaviour: out-of-bounds or uninitialised reads, bad alignment, use after free, aliasing
# violations.
#
# Miri needs a nightly toolchain, which this script installs with rustup the first time
# (rust-toolchain.toml pins the stable release everything else builds with). The sweeps that
# compare the formatters with `format!` over hundreds of thousands of values are skipped under
# Miri (`cfg_attr(miri, ignore)`): they would take hours there and go through the same unsafe
# code as the tests that run.
#
#   scripts/miri.sh                 # all of the SDK's unit tests
#   scripts/miri.sh text_writer::   # only the writer's
set -euo pipefail
cd "$(dirname "$0")/.."

toolchain=${MIRI_TOOLCHAIN:-nightly}
if rustup run "$toolchain" rustc --version >/dev/null 2>&1; then
    rustup component add --toolchain "$toolchain" miri rust-src
else
    rustup toolchain install "$toolchain" --profile minimal --component miri,rust-src
fi
cargo "+$toolchain" miri test -p trainrt-guest --lib "$@"
