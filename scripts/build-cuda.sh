#!/usr/bin/env bash
# Builds trainrt with `--features cuda` on a machine with no GPU and no system CUDA toolkit.
#
# The CUDA 13.0 compiler, headers and libraries come from NVIDIA's wheels on PyPI, pinned by
# version and sha256 below and installed once into a cache directory (pip install --target); no
# system package is touched. The kernels are compiled for one compute capability, CUDA_COMPUTE_CAP
# (default 90: H100/H200), since there is no GPU to detect.
#
#   scripts/build-cuda.sh            release build -> target/cuda/trainrt.gz (+ BUILD-INFO.txt)
#   scripts/build-cuda.sh --check    compile-check the CUDA code paths only (what CI runs)
#   scripts/build-cuda.sh --env      print the environment a manual `cargo ... --features cuda` needs
#
# Options: --out DIR (where the gzipped binary goes; default target/cuda).
# Environment: CUDA_COMPUTE_CAP (default 90), TRAINRT_CUDA_CACHE (default ~/.cache/trainrt-cuda),
# TRAINRT_CUDA_TARGET_DIR (cargo's target dir; default ~/.cache/trainrt-cuda-target; a separate
# one, so the CUDA build never invalidates the CPU build's artifacts).
#
# Linking: candle-core 0.11.1 turns on cudarc's `dynamic-linking` feature unconditionally, and
# cudarc refuses `dynamic-loading` next to it, so the binary links libcuda.so.1, libcudart.so.13,
# libcublas.so.13 and libcurand.so.10 by name (no rpath): they must be on the loader's path where
# it runs, even for `--device cpu`. At build time libcuda (the driver, which no wheel ships) is a
# stub generated here; cudart, cuBLAS and cuRAND are the pinned wheels' real libraries, so a
# symbol the binary needs and CUDA 13.0 lacks fails the link, not the GPU run. cudarc also asks
# for -lnvrtc, of which the binary uses nothing (the linker drops it): an empty stub stands in,
# and should that change, the link fails with the missing nvrtc symbols. See docs/cuda.md.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }

MODE=build
OUT_DIR=target/cuda
while [[ $# -gt 0 ]]; do
    case "$1" in
        --check) MODE=check ;;
        --build) MODE=build ;;
        --env) MODE=env ;;
        --out)
            [[ $# -ge 2 ]] || { echo "build-cuda.sh: --out needs a directory" >&2; exit 2; }
            OUT_DIR=$2
            shift
            ;;
        -h | --help) usage; exit 0 ;;
        *) echo "build-cuda.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

say() { echo "build-cuda: $*" >&2; }
die() { echo "build-cuda: error: $*" >&2; exit 1; }

# --- Pins ------------------------------------------------------------------------------------
# One CUDA version: 13.0, the newest the GPU machines' driver (580, CUDA 13.0) runs. It matters
# beyond the major version: candle loads its kernels as PTX, which a driver only JIT-compiles
# when it is at least as new as the nvcc that wrote it, and cudarc 0.19.10 knows 13.0-13.4.
CUDA_VERSION=13.0
CUDARC_CUDA_VERSION=13000
# What the kernels are compiled with (nvcc, its front end cicc in nvvm, the C runtime headers,
# cudart's headers, and CCCL's cub/thrust headers that reduce.cu includes): enough for --check.
COMPILER_WHEELS=(
    "nvidia-cuda-nvcc==13.0.88 --hash=sha256:56fe502eb77625a12f25172caa3cdddb4e4c8ba2c8c17dba44b164761b380f03"
    "nvidia-nvvm==13.0.88 --hash=sha256:c5f41ffeb6466944a026dfa5317d7d85355c119bbec279205d22f1869d1054e0"
    "nvidia-cuda-crt==13.0.88 --hash=sha256:2c8043c7c9e02492716426e9919fc78d2c5b3b2a7a768a88e952676b08aa55a4"
    "nvidia-cuda-runtime==13.0.96 --hash=sha256:7f82250d7782aa23b6cfe765ecc7db554bd3c2870c43f3d1821f1d18aebf0548"
    "nvidia-cuda-cccl==13.0.85 --hash=sha256:e0da7ad981f3a8aff08241b5bfc1af868742a63e2762f53a5171c492ef242649"
)
# The libraries the binary links (481 MB to download, cuBLAS 421 MB of it): only for a build.
LINK_WHEELS=(
    "nvidia-cublas==13.0.2.14 --hash=sha256:0cf238ffdbe46c00cb9aa98e7bca745c223a5ca5a53e686ac8b3e5a08fe80d6c"
    "nvidia-curand==10.4.0.35 --hash=sha256:1aee33a5da6e1db083fe2b90082def8915f30f3248d5896bcec36a579d941bfc"
)

CACHE="${TRAINRT_CUDA_CACHE:-$HOME/.cache/trainrt-cuda}/cuda-$CUDA_VERSION"
TOOLKIT="$CACHE/compiler/nvidia/cu13"
LIBS="$CACHE/libs/nvidia/cu13/lib"
# The cudarc version Cargo.lock pins, whose driver bindings name the functions the stub exports.
CUDARC_VERSION=$(awk '/^name = "cudarc"$/ { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock)
[[ -n "$CUDARC_VERSION" ]] || die "Cargo.lock has no cudarc; has candle-core's cuda feature changed?"

# --- Installing the wheels -------------------------------------------------------------------
# Installs a set of pinned wheels into $CACHE/NAME, unless exactly those pins are already there.
# Into a temporary directory first, so an interrupted install is never taken for a finished one.
install_wheels() {
    local name=$1
    shift
    local dest="$CACHE/$name" pins
    pins=$(printf '%s\n' "$@")
    if [[ -f "$dest/.pins" && "$(cat "$dest/.pins")" == "$pins" ]]; then
        return 0
    fi
    command -v python3 >/dev/null || die "python3 (with pip) is needed to install NVIDIA's CUDA wheels"
    python3 -m pip --version >/dev/null 2>&1 || die "python3 -m pip is needed to install NVIDIA's CUDA wheels"
    say "installing the CUDA $CUDA_VERSION $name wheels into $dest"
    rm -rf "$dest.tmp"
    mkdir -p "$dest.tmp"
    printf '%s\n' "$pins" >"$dest.tmp/requirements.txt"
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check \
        --no-deps --only-binary=:all: --require-hashes --target "$dest.tmp" \
        -r "$dest.tmp/requirements.txt" ||
        die "pip could not install the $name wheels (network? index? see above)"
    printf '%s\n' "$pins" >"$dest.tmp/.pins"
    rm -rf "$dest"
    mv "$dest.tmp" "$dest"
}

cudarc_source() {
    local dir
    cargo fetch --quiet >&2 || die "cargo fetch failed"
    dir=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"cudarc-$CUDARC_VERSION" 2>/dev/null | head -n 1)
    [[ -n "$dir" && -f "$dir/src/driver/sys/mod.rs" ]] ||
        die "cudarc $CUDARC_VERSION's source is not in the cargo registry"
    echo "$dir"
}

# The link root: unversioned names for the wheels' libraries (what `-lcublas` looks for), a stub
# libcuda.so with libcuda.so.1's soname and an empty libnvrtc.so. The libcuda stub defines every
# driver function cudarc binds, each returning CUDA_ERROR_STUB_LIBRARY (34), as NVIDIA's own stub
# does; the binary records only the soname and binds to the real driver's libcuda.so.1 wherever
# it runs.
make_link_root() {
    local cudarc names
    if [[ -f "$LINK_ROOT/.done" ]]; then
        return 0
    fi
    cudarc=$(cudarc_source)
    command -v cc >/dev/null || die "a C compiler (cc) is needed to build the libcuda link stub"
    say "making the link root $LINK_ROOT (libcuda stub from $(basename "$cudarc")'s bindings)"
    rm -rf "$CACHE/.link.tmp"
    mkdir -p "$CACHE/.link.tmp/lib/stubs" "$CACHE/.link.tmp/stub-runtime"
    local lib
    for lib in "$TOOLKIT/lib/libcudart.so.13" "$LIBS/libcublas.so.13" "$LIBS/libcublasLt.so.13" \
        "$LIBS/libcurand.so.10"; do
        [[ -f "$lib" ]] || die "$lib is missing from the installed wheels"
        local base
        base=$(basename "$lib")
        ln -s "$lib" "$CACHE/.link.tmp/lib/${base%%.so.*}.so"
    done
    names=$(grep -oh 'load::<_F>("cu[A-Za-z0-9_]*")' "$cudarc/src/driver/sys/mod.rs" |
        sed 's/.*("\(.*\)")/\1/' | sort -u)
    [[ $(wc -l <<<"$names") -gt 100 ]] || die "found too few driver functions in $cudarc; has its layout changed?"
    {
        echo "/* libcuda link stub, generated by scripts/build-cuda.sh; never loaded by trainrt. */"
        echo "#define STUB(f) int f(void) { return 34; /* CUDA_ERROR_STUB_LIBRARY */ }"
        sed 's/.*/STUB(&)/' <<<"$names"
    } >"$CACHE/.link.tmp/libcuda-stub.c"
    cc -shared -fPIC -O1 -Wl,-soname,libcuda.so.1 -o "$CACHE/.link.tmp/lib/stubs/libcuda.so" \
        "$CACHE/.link.tmp/libcuda-stub.c"
    echo "/* libnvrtc link stub, generated by scripts/build-cuda.sh: trainrt uses no NVRTC symbol. */" \
        >"$CACHE/.link.tmp/libnvrtc-stub.c"
    cc -shared -fPIC -Wl,-soname,libnvrtc.so.13 -o "$CACHE/.link.tmp/lib/stubs/libnvrtc.so" \
        "$CACHE/.link.tmp/libnvrtc-stub.c"
    ln -s "$LINK_ROOT/lib/stubs/libcuda.so" "$CACHE/.link.tmp/stub-runtime/libcuda.so.1"
    touch "$CACHE/.link.tmp/.done"
    rm -rf "$LINK_ROOT" "$CACHE"/link-*
    mv "$CACHE/.link.tmp" "$LINK_ROOT"
}
# Where cudarc's build script finds the libraries to link ($CUDA_ROOT/lib, $CUDA_ROOT/lib/stubs).
# Its name is a hash of what goes into it (the cudarc version, the library pins and the function
# above), so any change to it changes CUDA_ROOT, which cudarc's build script watches: cargo then
# relinks the binary, which it would not do for a changed library.
LINK_ID=$(printf '%s\n' "$CUDARC_VERSION" "${LINK_WHEELS[@]}" "$(declare -f make_link_root)" |
    sha256sum | cut -c1-12)
LINK_ROOT="$CACHE/link-$LINK_ID"
# The libcuda stub as libcuda.so.1, for this script's own no-GPU smoke test only.
STUB_RUNTIME="$LINK_ROOT/stub-runtime"

# --- Environment -----------------------------------------------------------------------------
setup_env() {
    [[ -x "$TOOLKIT/bin/nvcc" ]] || die "$TOOLKIT/bin/nvcc is missing"
    export PATH="$TOOLKIT/bin:$PATH"
    # cudaforge (candle-kernels' build script) takes nvcc from $NVCC and derives the include dir
    # from it; cudarc reads the CUDA version from CUDARC_CUDA_VERSION and links from $CUDA_ROOT.
    export NVCC="$TOOLKIT/bin/nvcc"
    export CUDARC_CUDA_VERSION
    export CUDA_ROOT="$LINK_ROOT"
    # cudarc searches every one of these that is set: only ours.
    unset CUDA_HOME CUDA_PATH CUDA_TOOLKIT_ROOT_DIR CUDNN_LIB
    export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
    export CARGO_TARGET_DIR="${TRAINRT_CUDA_TARGET_DIR:-$HOME/.cache/trainrt-cuda-target}"
    export RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-$(nproc)}"
}

# One cache user at a time: a second run waits rather than install over the first.
mkdir -p "$CACHE"
if command -v flock >/dev/null; then
    exec 9>"$CACHE/.lock"
    flock 9
fi

install_wheels compiler "${COMPILER_WHEELS[@]}"
if [[ $MODE != check ]]; then
    install_wheels libs "${LINK_WHEELS[@]}"
    make_link_root
fi
setup_env
nvcc_version=$(nvcc --version | sed -n 's/.*release \([0-9.]*\),.*/\1/p')
[[ "$nvcc_version" == "$CUDA_VERSION" ]] || die "nvcc reports CUDA '$nvcc_version', expected $CUDA_VERSION"

if [[ $MODE == env ]]; then
    for var in PATH NVCC CUDARC_CUDA_VERSION CUDA_ROOT CUDA_COMPUTE_CAP CARGO_TARGET_DIR; do
        printf 'export %s=%q\n' "$var" "${!var}"
    done
    printf '# at run time: export LD_LIBRARY_PATH=%q\n' "$TOOLKIT/lib:$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    exit 0
fi

command -v rustup >/dev/null && rustup toolchain install >/dev/null 2>&1 || true
say "nvcc $nvcc_version, compute capability $CUDA_COMPUTE_CAP, target dir $CARGO_TARGET_DIR"

if [[ $MODE == check ]]; then
    # Every target of the trainrt crate (lib, binary, unit and integration tests, benches) with
    # the cuda feature, linted as CI lints the default build. Build scripts run in full here, so
    # candle-kernels' kernels are compiled by nvcc: what a CUDA build would do, short of linking.
    cargo clippy -p trainrt --features cuda --all-targets -- -D warnings
    say "the CUDA code paths compile (cargo clippy -p trainrt --features cuda --all-targets)"
    exit 0
fi

cargo build --release -p trainrt-cli --features cuda --bin trainrt
bin="$CARGO_TARGET_DIR/release/trainrt"
[[ -x "$bin" ]] || die "cargo reported success but $bin is missing"

# What the binary needs from the loader where it runs.
needed=$(readelf -d "$bin" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | tr '\n' ' ')
say "the binary needs: $needed"

# Smoke test on this machine, which has no GPU and no driver: the wheels' libraries and the stub
# as libcuda.so.1 stand in for a CUDA installation. CPU training must work; --device cuda must fail
# with a clear error and exit 1, not panic.
smoke=$(mktemp -d)
trap 'rm -rf "$smoke"' EXIT
run_smoke() {
    LD_LIBRARY_PATH="$TOOLKIT/lib:$LIBS:$STUB_RUNTIME" TRAINRT_CACHE_DIR=off "$bin" "$@"
}
run_smoke callbacks list >"$smoke/list.txt" || die "'trainrt callbacks list' failed"
run_smoke run --device cpu --data synthetic:samples=256,features=8,classes=3 --epochs 2 \
    --run-dir "$smoke/cpu" --callback logger >"$smoke/cpu.log" 2>&1 ||
    { cat "$smoke/cpu.log" >&2; die "a CPU run of the CUDA build failed"; }
set +e
run_smoke run --device cuda --data synthetic:samples=256,features=8,classes=3 --epochs 1 \
    --run-dir "$smoke/cuda" >"$smoke/cuda.log" 2>&1
code=$?
set -e
message=$(grep -m 1 '^trainrt: ' "$smoke/cuda.log" || true)
if [[ $code -ne 1 || -z "$message" ]] || grep -q "panicked" "$smoke/cuda.log"; then
    cat "$smoke/cuda.log" >&2
    die "--device cuda without a GPU exited $code; expected 1 with a 'trainrt: ' error, no panic"
fi
say "smoke test: CPU run ok; --device cuda without a GPU exits 1: $message"

# Gzipped (76 MB -> about 20 MB), to fit what is carried to a GPU machine.
mkdir -p "$OUT_DIR"
gzip -6 -c "$bin" >"$OUT_DIR/trainrt.gz.tmp"
mv "$OUT_DIR/trainrt.gz.tmp" "$OUT_DIR/trainrt.gz"
{
    echo "trainrt --features cuda, built by scripts/build-cuda.sh"
    echo "git: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (working tree had changes)')"
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -srm)"
    echo "cuda: $CUDA_VERSION (nvcc $nvcc_version), compute capability $CUDA_COMPUTE_CAP"
    echo "needs: $needed"
    echo "sha256 (uncompressed): $(sha256sum "$bin" | cut -d' ' -f1)"
    echo "wheels:"
    printf '  %s\n' "${COMPILER_WHEELS[@]%% *}" "${LINK_WHEELS[@]%% *}"
} >"$OUT_DIR/BUILD-INFO.txt"
say "built $bin ($(du -h "$bin" | cut -f1)) and $OUT_DIR/trainrt.gz ($(du -h "$OUT_DIR/trainrt.gz" | cut -f1)), for scripts/gpu-check.sh on a GPU machine"
