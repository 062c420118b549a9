#!/usr/bin/env bash
# Runs a prebuilt `--features cuda` trainrt on a GPU machine, next to the CPU, and records what
# happened. It judges nothing: every run's exit code, output, run files, timings and the CPU/CUDA
# differences go under $OUT for a person to read (start with $OUT/gpu-check/results.md).
#
#   OUT=/some/dir scripts/gpu-check.sh [TRAINRT]     (default: target/cuda/trainrt.gz)
#
# TRAINRT is the binary scripts/build-cuda.sh made, gzipped (as it leaves it) or not.
#
# Needs: an NVIDIA driver, the CUDA 13 libraries the binary links (libcudart.so.13,
# libcublas.so.13, libcublasLt.so.13, libcurand.so.10, libnvrtc.so.13: from a CUDA 13 toolkit
# or from the nvidia wheels PyTorch installs; found and put on LD_LIBRARY_PATH here), python3, and
# coreutils' timeout. No Rust, no network. Made to finish in well under 10 minutes on an H100/H200
# with 16 cores: each run has a time limit (GPU_CHECK_RUN_TIMEOUT, default 150 s), and runs that
# would start after GPU_CHECK_BUDGET seconds (default 480) are skipped and recorded as skipped.
#
# What it runs, in this order (same seed and settings on both devices, the bundled callbacks):
#   env        driver, GPU, nvcc, PyTorch, the binary's libraries as the loader resolves them
#   digits     the embedded digits dataset, MLP, 20 epochs: on cuda (twice) and on cpu
#   resume     digits on cuda for 4 epochs, then --resume to 8 on cuda and (a copy) on cpu, next to
#              uninterrupted 8-epoch runs on both; `trainrt checkpoint` on the CUDA-written file
#   errors     --device cuda:N past the last GPU, and --device cuda with CUDA_VISIBLE_DEVICES=""
#   synthetic  synthetic:samples=200000,features=256,classes=10, mlp:512,256, batch 512, adamw:
#              5 epochs and 1 epoch on each device; the difference gives samples/s past start-up
set -uo pipefail
cd "$(dirname "$0")/.."

INPUT=${1:-target/cuda/trainrt.gz}
OUT=${OUT:-$PWD/gpu-check-out}
RES="$OUT/gpu-check"
RUN_TIMEOUT=${GPU_CHECK_RUN_TIMEOUT:-150}
BUDGET=${GPU_CHECK_BUDGET:-480}
mkdir -p "$RES/logs" "$RES/runs"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
started=$(date +%s)

note() { echo "gpu-check: $*" | tee -a "$RES/progress.txt" >&2; }

if [[ ! -f "$INPUT" ]]; then
    note "no trainrt at '$INPUT' (scripts/build-cuda.sh makes target/cuda/trainrt.gz)"
    exit 2
fi
cp "$(dirname "$INPUT")/BUILD-INFO.txt" "$RES/" 2>/dev/null || true
BIN="$WORK/bin/trainrt"
mkdir -p "$WORK/bin"
if [[ "$INPUT" == *.gz ]]; then
    gzip -dc "$INPUT" >"$BIN" || { note "cannot decompress $INPUT"; exit 2; }
else
    cp "$INPUT" "$BIN"
fi
chmod +x "$BIN"
echo "$(sha256sum "$BIN" | cut -d' ' -f1)  trainrt (from $INPUT)" >"$RES/binary-sha256.txt"

# --- Environment and libraries ---------------------------------------------------------------
{
    echo "## date"; date -u
    echo "## host"; uname -a; echo "nproc: $(nproc)"
    echo "## nvidia-smi"; nvidia-smi 2>&1
    echo "## nvidia-smi --query-gpu"
    nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv 2>&1
    echo "## nvcc --version"; nvcc --version 2>&1
    echo "## python3 / torch"
    python3 -c 'import sys; print(sys.version)' 2>&1
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' 2>&1
} >"$RES/env.txt"

# The libraries the binary names, and directories that may hold them: the CUDA toolkit nvcc
# belongs to, the usual toolkit paths, and the nvidia wheels' lib directories in python's path.
needed=$(readelf -d "$BIN" 2>/dev/null | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p')
candidates=()
if command -v nvcc >/dev/null; then
    root=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
    candidates+=("$root/lib64" "$root/lib" "$root/targets/x86_64-linux/lib")
fi
candidates+=(/usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-13*/lib64)
while IFS= read -r dir; do candidates+=("$dir"); done < <(python3 - 2>/dev/null <<'EOF'
import glob, os, sys
seen = set()
for p in sys.path:
    for d in sorted(glob.glob(os.path.join(p, "nvidia", "*", "lib"))) + [os.path.join(p, "torch", "lib")]:
        if os.path.isdir(d) and d not in seen:
            seen.add(d)
            print(d)
EOF
)
extra=()
for lib in $needed; do
    # Already resolvable without help (the driver's libcuda.so.1, libc, ...)?
    if LD_LIBRARY_PATH="$(IFS=:; echo "${extra[*]:-}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        ldd "$BIN" 2>/dev/null | grep -q "^\s*$lib => /"; then
        continue
    fi
    for dir in "${candidates[@]}"; do
        if [[ -e "$dir/$lib" ]]; then
            extra+=("$dir")
            break
        fi
    done
done
if [[ ${#extra[@]} -gt 0 ]]; then
    LD_LIBRARY_PATH="$(IFS=:; echo "${extra[*]}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export LD_LIBRARY_PATH
fi
{
    echo "## needed"; echo "$needed"
    echo "## candidate directories"; printf '%s\n' "${candidates[@]}"
    echo "## LD_LIBRARY_PATH"; echo "${LD_LIBRARY_PATH:-}"
    echo "## ldd"; ldd "$BIN" 2>&1
} >"$RES/libraries.txt"
if ldd "$BIN" 2>&1 | grep -q "not found"; then
    note "some libraries are not found (see libraries.txt); the runs below will fail to start"
fi

# --- Runs ------------------------------------------------------------------------------------
# run NAME ARGS...: runs trainrt with a time limit; keeps stdout, stderr, exit code and seconds.
run() {
    local name=$1
    shift
    local t0 t1 code left limit
    printf '%s\n' "$*" >"$RES/logs/$name.args"
    left=$((BUDGET - ($(date +%s) - started)))
    if [[ $left -le 5 ]]; then
        echo skipped >"$RES/logs/$name.rc"
        note "$name: skipped, the ${BUDGET} s budget is spent"
        return 0
    fi
    limit=$((left < RUN_TIMEOUT ? left : RUN_TIMEOUT))
    t0=$(date +%s.%N)
    TRAINRT_CACHE_DIR="$WORK/cache" timeout "$limit" "$BIN" "$@" \
        >"$RES/logs/$name.out" 2>"$RES/logs/$name.err"
    code=$?
    t1=$(date +%s.%N)
    echo "$code" >"$RES/logs/$name.rc"
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f\n", b - a }' >"$RES/logs/$name.seconds"
    note "$name: exit $code in $(cat "$RES/logs/$name.seconds") s"
    return 0
}

# Keeps a run's record files (not its checkpoints, listed instead) under $RES/runs.
keep() {
    local name=$1 dir="$WORK/runs/$1"
    [[ -d "$dir" ]] || return 0
    mkdir -p "$RES/runs/$name"
    cp "$dir"/*.json "$dir"/*.jsonl "$RES/runs/$name/" 2>/dev/null
    ls -l "$dir/checkpoints" >"$RES/runs/$name/checkpoints.txt" 2>&1
}

"$BIN" --version >"$RES/version.txt" 2>&1
"$BIN" callbacks list >"$RES/callbacks.txt" 2>&1
# All the bundled callbacks, with the demo's settings where a callback has some; a callback this
# script does not know runs with its defaults.
callbacks=()
while read -r name _; do
    [[ -n "$name" ]] || continue
    case "$name" in
        early-stopping) callbacks+=(--callback "early-stopping:monitor=val_loss,patience=4,restore_best=true") ;;
        model-checkpoint) callbacks+=(--callback "model-checkpoint:monitor=val_accuracy,save_best_only=true") ;;
        lr-schedule) callbacks+=(--callback "lr-schedule:schedule=step,step_size=3,gamma=0.7") ;;
        reduce-lr-on-plateau) callbacks+=(--callback "reduce-lr-on-plateau:monitor=val_loss,factor=0.5,patience=2") ;;
        *) callbacks+=(--callback "$name") ;;
    esac
done <"$RES/callbacks.txt"
printf '%s\n' "${callbacks[@]}" | grep -v '^--callback$' >"$RES/callback-specs.txt"

digits=(--data digits --model mlp --epochs 20 --batch-size 32 --lr 0.05 --seed 42)
synthetic=(--data synthetic:samples=200000,features=256,classes=10 --model mlp:512,256
    --batch-size 512 --lr 0.01 --optimizer adamw --seed 7)
# For resume: no callback whose decisions depend on the planned epoch count, and no early stop.
resume_cbs=(--callback logger --callback model-checkpoint:monitor=val_accuracy,save_best_only=true
    --callback lr-schedule:schedule=step,step_size=3,gamma=0.7
    --callback reduce-lr-on-plateau:monitor=val_loss,factor=0.5,patience=2 --callback terminate-on-nan)
resume=(--data digits --model mlp --batch-size 32 --lr 0.05 --seed 3)

for dev in cuda cuda-again cpu; do
    run "digits-$dev" run --device "${dev%-again}" "${digits[@]}" "${callbacks[@]}" --run-dir "$WORK/runs/digits-$dev"
    keep "digits-$dev"
done

# Resume: 4 epochs on CUDA, then on to 8 on CUDA and, from a copy, on the CPU.
run resume-cuda-first4 run --device cuda "${resume[@]}" --epochs 4 "${resume_cbs[@]}" --run-dir "$WORK/runs/resume-on-cuda"
if [[ -d "$WORK/runs/resume-on-cuda" ]]; then
    cp -a "$WORK/runs/resume-on-cuda" "$WORK/runs/resume-on-cpu"
    run checkpoint-cuda-last checkpoint "$WORK/runs/resume-on-cuda/checkpoints/last.safetensors"
fi
run resume-cuda-to8 run --resume "$WORK/runs/resume-on-cuda" --epochs 8
run resume-cpu-to8 run --resume "$WORK/runs/resume-on-cpu" --device cpu --epochs 8
for dev in cuda cpu; do
    run "straight8-$dev" run --device "$dev" "${resume[@]}" --epochs 8 "${resume_cbs[@]}" --run-dir "$WORK/runs/straight8-$dev"
done
for name in resume-on-cuda resume-on-cpu straight8-cuda straight8-cpu; do keep "$name"; done

# Errors: a GPU ordinal past the last one, and no visible GPU with the driver present.
gpus=$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null | wc -l)
run error-ordinal run --device "cuda:${gpus:-0}" --data digits --epochs 1 --run-dir "$WORK/runs/error-ordinal"
CUDA_VISIBLE_DEVICES="" run error-no-visible-gpu run --device cuda --data digits --epochs 1 --run-dir "$WORK/runs/error-no-gpu"

# Throughput last: the slowest runs (the CPU's), so a spent budget skips them, not the checks above.
for dev in cuda cpu; do
    run "synthetic-$dev" run --device "$dev" "${synthetic[@]}" --epochs 5 "${callbacks[@]}" --run-dir "$WORK/runs/synthetic-$dev"
    keep "synthetic-$dev"
    run "synthetic1-$dev" run --device "$dev" "${synthetic[@]}" --epochs 1 "${callbacks[@]}" --run-dir "$WORK/runs/synthetic1-$dev"
    keep "synthetic1-$dev"
done

# --- Comparison ------------------------------------------------------------------------------
python3 - "$RES" "$(($(date +%s) - started))" <<'EOF' || note "the comparison script failed"
import json, os, sys

res, total_s = sys.argv[1], sys.argv[2]

def lines(run, name):
    path = os.path.join(res, "runs", run, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]

def summary(run):
    path = os.path.join(res, "runs", run, "summary.json")
    return json.load(open(path)) if os.path.exists(path) else None

def log(name, ext):
    path = os.path.join(res, "logs", f"{name}.{ext}")
    return open(path).read().strip() if os.path.exists(path) else None

def decisions_key(run, from_epoch=0):
    d = lines(run, "decisions.jsonl")
    if d is None:
        return None
    return [(x.get("callback"), x.get("event"), x.get("epoch"), x.get("step"),
             (x.get("decision") or {}).get("kind"), x.get("status"))
            for x in d if (x.get("epoch") or 0) >= from_epoch]

def compare(a, b, from_epoch=0):
    """Facts about runs a and b: decision sequences and per-epoch metric differences."""
    out = {"runs": [a, b]}
    da, db = decisions_key(a, from_epoch), decisions_key(b, from_epoch)
    out["decisions_counted"] = [None if da is None else len(da), None if db is None else len(db)]
    if da is not None and db is not None:
        out["decision_sequences_equal"] = da == db
        first = next((i for i, (x, y) in enumerate(zip(da, db)) if x != y), None)
        if first is None and len(da) != len(db):
            first = min(len(da), len(db))
        if first is not None:
            out["first_decision_difference"] = {
                "index": first,
                a: da[first] if first < len(da) else None,
                b: db[first] if first < len(db) else None,
            }
        kinds = lambda d: sorted({k[4] for k in d})
        out["decision_kinds"] = {a: kinds(da), b: kinds(db)}
    ma, mb = lines(a, "metrics.jsonl"), lines(b, "metrics.jsonl")
    if ma is not None and mb is not None:
        ma = [m for m in ma if m.get("epoch", 0) >= from_epoch]
        mb = [m for m in mb if m.get("epoch", 0) >= from_epoch]
        out["epochs"] = [len(ma), len(mb)]
        diffs = {}
        for x, y in zip(ma, mb):
            for k, v in x.items():
                w = y.get(k)
                if k == "epoch" or not isinstance(v, (int, float)) or not isinstance(w, (int, float)):
                    continue
                d = abs(v - w)
                rel = d / max(abs(v), abs(w), 1e-12)
                cur = diffs.setdefault(k, {"max_abs": 0.0, "max_rel": 0.0, "at_epoch": None})
                if d > cur["max_abs"]:
                    cur.update(max_abs=d, at_epoch=x.get("epoch"))
                cur["max_rel"] = max(cur["max_rel"], rel)
        out["metric_differences"] = diffs
        out["last_metrics"] = {a: ma[-1] if ma else None, b: mb[-1] if mb else None}
    return out

def first_error(name):
    err = log(name, "err") or ""
    errs = [l for l in err.splitlines() if l.startswith("trainrt: ")]
    return errs[0] if errs else (err.strip().splitlines() or [""])[-1]

def marginal(full, one):
    """Samples/s between a 1-epoch and a full run of the same task: start-up and JIT cancel out."""
    a, b = summary(full), summary(one)
    ev = lines(full, "events.jsonl") or []
    start = next((e for e in ev if e.get("event") == "train-start"), None)
    if not (a and b and start) or a["epochs_completed"] <= b["epochs_completed"]:
        return None
    dt = a["wall_time_s"] - b["wall_time_s"]
    de = a["epochs_completed"] - b["epochs_completed"]
    return {"epochs": de, "seconds": dt, "train_samples_per_second": de * start["train_samples"] / dt if dt > 0 else None}

def throughput(run, log_name):
    s, ev = summary(run), lines(run, "events.jsonl")
    info = {"exit": log(log_name, "rc"), "process_seconds": log(log_name, "seconds")}
    if s:
        info.update({k: s.get(k) for k in ("outcome", "reason", "epochs_completed", "steps", "wall_time_s")})
    start = next((e for e in ev or [] if e.get("event") == "train-start"), None)
    if s and start and s.get("wall_time_s"):
        epochs = s["epochs_completed"] - start.get("start_epoch", 0)
        info["train_samples"] = start.get("train_samples")
        info["train_samples_per_wall_second"] = epochs * start["train_samples"] / s["wall_time_s"]
        info["note"] = "wall_time_s covers the whole invocation: start-up, validation and callbacks included"
    return info

report = {
    "total_seconds": int(total_s),
    "runs": {},
    "digits_cuda_vs_cpu": compare("digits-cuda", "digits-cpu"),
    "digits_cuda_vs_cuda_again": compare("digits-cuda", "digits-cuda-again"),
    "synthetic_cuda_vs_cpu": compare("synthetic-cuda", "synthetic-cpu"),
    "resume_on_cuda_vs_straight8_cuda": compare("resume-on-cuda", "straight8-cuda", from_epoch=4),
    "resume_on_cpu_vs_straight8_cpu": compare("resume-on-cpu", "straight8-cpu", from_epoch=4),
    "resume_on_cpu_vs_resume_on_cuda": compare("resume-on-cpu", "resume-on-cuda", from_epoch=4),
    "straight8_cuda_vs_cpu": compare("straight8-cuda", "straight8-cpu"),
}
for name in sorted(os.listdir(os.path.join(res, "logs"))):
    if name.endswith(".rc"):
        n = name[:-3]
        report["runs"][n] = {"exit": log(n, "rc"), "seconds": log(n, "seconds"),
                             "panicked": "panicked" in (log(n, "err") or ""),
                             "error": first_error(n), "stderr_tail": (log(n, "err") or "")[-600:]}
report["throughput"] = {r: throughput(r, r) for r in
                        ("digits-cuda", "digits-cpu", "synthetic-cuda", "synthetic-cpu", "synthetic1-cuda", "synthetic1-cpu")}
report["synthetic_past_first_epoch"] = {d: marginal(f"synthetic-{d}", f"synthetic1-{d}") for d in ("cuda", "cpu")}
json.dump(report, open(os.path.join(res, "compare.json"), "w"), indent=2, default=str)

with open(os.path.join(res, "results.md"), "w") as f:
    f.write("# gpu-check results (recorded, not judged)\n\n")
    f.write(f"Total: {total_s} s. Environment: env.txt, libraries.txt. Details: compare.json, logs/, runs/.\n\n")
    f.write("| run | exit | seconds | panicked | stderr (first `trainrt:` line, else last) |\n|---|---|---|---|---|\n")
    for n, r in report["runs"].items():
        err = r["error"].replace("|", "\\|")[:200]
        f.write(f"| {n} | {r['exit']} | {r['seconds']} | {r['panicked']} | {err} |\n")
    f.write("\n| throughput | outcome | epochs | wall_time_s | train samples/s |\n|---|---|---|---|---|\n")
    for n, t in report["throughput"].items():
        sps = t.get("train_samples_per_wall_second")
        f.write(f"| {n} | {t.get('outcome')} | {t.get('epochs_completed')} | {t.get('wall_time_s')} | "
                f"{'' if sps is None else round(sps)} |\n")
    f.write("\n| past the first epoch | epochs | seconds | train samples/s |\n|---|---|---|---|\n")
    for d, m in report["synthetic_past_first_epoch"].items():
        if m:
            sps = m["train_samples_per_second"]
            f.write(f"| synthetic-{d} | {m['epochs']} | {m['seconds']:.2f} | {'' if sps is None else round(sps)} |\n")
        else:
            f.write(f"| synthetic-{d} | | | (a run is missing) |\n")
    f.write("\n| comparison | decision sequences equal | epochs | largest metric differences (abs) |\n|---|---|---|---|\n")
    for key in [k for k in report if "_vs_" in k]:
        c = report[key]
        diffs = ", ".join(f"{k} {v['max_abs']:.3g}" for k, v in sorted(c.get("metric_differences", {}).items()))
        f.write(f"| {key} | {c.get('decision_sequences_equal')} | {c.get('epochs')} | {diffs} |\n")
EOF
note "done in $(($(date +%s) - started)) s; results in $RES (results.md, compare.json)"
