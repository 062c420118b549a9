#!/usr/bin/env bash
# Reads a run's TensorBoard events with TensorBoard's own reader (the PyPI `tensorboard`
# package's EventAccumulator, pinned, installed once into a venv under $TRAINRT_TOOLS) and checks
# that it sees exactly what the run recorded: one point per epoch metric and per logged step, the
# decisions as text, and, after an interrupted run is resumed, what it wrote past its checkpoint
# dropped instead of shown twice. Its reader skips a record with a bad checksum without a word,
# so the points are counted, not just read.
#
#   TRAINRT=path/to/trainrt scripts/check-tensorboard.sh     # default: target/debug/trainrt
set -euo pipefail
cd "$(dirname "$0")/.."

TENSORBOARD_VERSION=2.21.0
TOOLS=${TRAINRT_TOOLS:-$HOME/.cache/trainrt-tools}
VENV=$TOOLS/tensorboard-venv
TRAINRT=${TRAINRT:-${CARGO_TARGET_DIR:-target}/debug/trainrt}

if ! "$VENV/bin/python" -c "import tensorboard; assert tensorboard.__version__ == '$TENSORBOARD_VERSION'" 2>/dev/null; then
    echo "==> installing tensorboard $TENSORBOARD_VERSION into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "tensorboard==$TENSORBOARD_VERSION"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
# X: 2 epochs, copied to Y as an interrupted run would leave it; X goes on to epoch 3, and its
# files (steps past Y's checkpoint at step 90) are put into Y as the orphans of that crash. Y
# then resumes to 4 epochs. reduce-lr-on-plateau decides at every epoch end (text markers).
cb=reduce-lr-on-plateau:patience=0,min_delta=100
"$TRAINRT" run --epochs 2 --run-dir X --callback "$cb" >/dev/null 2>&1
cp -r X Y
"$TRAINRT" run --resume X --epochs 3 >/dev/null 2>&1
cp X/tensorboard/* Y/tensorboard/
"$TRAINRT" run --resume Y --epochs 4 >/dev/null 2>&1

# The TensorBoard server's own accumulator (plugin_event_accumulator: every summary as a tensor,
# and the orphans of a restart purged for all of them, text included).
"$VENV/bin/python" - Y <<'EOF'
import json, sys
from tensorboard.backend.event_processing import plugin_event_accumulator as pea
from tensorboard.util import tensor_util

run = sys.argv[1]
acc = pea.EventAccumulator(f"{run}/tensorboard", size_guidance={pea.TENSORS: 0})
acc.Reload()
def points(tag):
    return [(t.step, tensor_util.make_ndarray(t.tensor_proto)) for t in acc.Tensors(tag)]
metrics = [json.loads(line) for line in open(f"{run}/metrics.jsonl")]
steps = [m["step"] for m in metrics]
failures = []
for name in ["loss", "accuracy", "val_loss", "val_accuracy", "lr", "grad_norm"]:
    got = [(s, float(v)) for s, v in points(f"epoch/{name}")]
    want = [(m["step"], float(m[name])) for m in metrics]
    # TensorBoard keeps scalars as float32; compare at that precision.
    close = all(abs(g - w) <= 1e-6 * max(1.0, abs(w)) for (_, g), (_, w) in zip(got, want))
    if [s for s, _ in got] != steps or not close:
        failures.append(f"epoch/{name}: {got} != {want}")
for tag in ["batch/loss", "batch/lr"]:
    got = [s for s, _ in points(tag)]
    if got != list(range(10, steps[-1] + 1, 10)):
        failures.append(f"{tag}: steps {got}")
texts = [v.item().decode() for _, v in points("decisions")]
decisions = [json.loads(l) for l in open(f"{run}/decisions.jsonl")]
applied = [d["decision"] for d in decisions
           if d["status"] == "applied" and d["decision"]["kind"] == "set-learning-rate"]
if [json.loads(t.split(": ", 1)[1]) for t in texts] != applied:
    failures.append(f"decisions: {texts} for {applied}")
if failures:
    sys.exit("TensorBoard does not read what the run recorded:\n" + "\n".join(failures))
print(f"check-tensorboard: {len(steps)} epochs and {len(texts)} decisions as recorded; the "
      "interrupted run's steps past its checkpoint dropped")
EOF
