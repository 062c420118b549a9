"""early-stop: the example callback of docs/writing-callbacks.md, in Python (componentize-py).

Stops training when `val_loss` has not improved by more than `min_delta` for `patience` epochs.
Parameters: `patience` (default 3), `min_delta` (default 0). Its decisions, error messages and
state bytes are the same as those of the Rust, JavaScript and C versions: see
examples/callbacks/rust/src/lib.rs for the reference.

Build: componentize-py -d ../../../wit -w callback-world componentize --stub-wasi app -o build/early-stop.wasm
"""

import math
import re
import struct

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host, types

MONITOR = "val_loss"
METRIC = "epochs_since_best"
STATE_VERSION = 1
U32_MAX = 0xFFFF_FFFF

# The characters Rust's `str::trim` removes (Unicode White_Space), so values parse as in the SDK.
WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
# Rust's `u32` and (finite) `f64` syntax; ASCII digits only.
U32_SYNTAX = re.compile(r"\+?[0-9]+")
F64_SYNTAX = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def param_error(key: str, value: str, expected: str) -> str:
    return f"parameter {key}={value}: expected {expected}"


def parse_u32(text: str):
    if U32_SYNTAX.fullmatch(text) is None:
        return None
    value = int(text)
    return value if value <= U32_MAX else None


def parse_non_negative(text: str):
    if F64_SYNTAX.fullmatch(text) is None:
        return None
    value = float(text)
    return value if math.isfinite(value) and value >= 0.0 else None


def parse_config(entries):
    """Returns (patience, min_delta) or raises Err(message), with the Rust SDK's messages."""
    given = {}
    for entry in entries:
        if entry.key == "":
            raise Err(f"parameter ={entry.value}: the parameter name is empty")
        if entry.key in given:
            first = given[entry.key]
            raise Err(
                f"parameter {entry.key} is given twice "
                f"({entry.key}={first} and {entry.key}={entry.value})"
            )
        given[entry.key] = entry.value

    patience = 3
    if "patience" in given:
        raw = given["patience"]
        patience = parse_u32(raw.strip(WHITESPACE))
        if patience is None:
            raise Err(param_error("patience", raw, "a non-negative integer"))
    min_delta = 0.0
    if "min_delta" in given:
        raw = given["min_delta"]
        min_delta = parse_non_negative(raw.strip(WHITESPACE))
        if min_delta is None:
            raise Err(param_error("min_delta", raw, "a non-negative number"))
    for key in given:
        if key not in ("patience", "min_delta"):
            raise Err(f"unknown parameter '{key}'; known parameters: patience, min_delta")
    return patience, min_delta


class State:
    def __init__(self, patience: int, min_delta: float):
        self.patience = patience
        self.min_delta = min_delta
        self.metric_names = []
        self.wait = 0
        self.best = math.inf
        self.best_epoch = 0
        self.has_best = False


# The one instance, created by `init`; events before a successful init get no decisions.
STATE = None


class StateReader:
    """Reads the SDK's state format, with its error messages."""

    def __init__(self, data: bytes):
        if len(data) == 0:
            raise Err("callback state is empty")
        if data[0] != STATE_VERSION:
            raise Err(f"callback state has format version {data[0]}, expected {STATE_VERSION}")
        self.data = data
        self.pos = 1

    def take(self, fmt: str, what: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise Err(f"callback state is truncated (reading {what})")
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return value

    def bool(self) -> bool:
        byte = self.take("<B", "bool")
        if byte > 1:
            raise Err(f"callback state is corrupt (bool byte {byte})")
        return byte == 1

    def finish(self):
        rest = len(self.data) - self.pos
        if rest:
            raise Err(f"callback state has {rest} unexpected trailing bytes")


class Callback(exports.Callback):
    def init(self, config):
        global STATE
        patience, min_delta = parse_config(config)
        STATE = State(patience, min_delta)
        return types.Registration(
            events=[types.EventKind.TRAIN_START, types.EventKind.EPOCH_END], batch_every=0
        )

    def on_train_start(self, info):
        if STATE is not None:
            STATE.metric_names = list(info.metric_names)
        return []

    def on_epoch_end(self, metrics):
        s = STATE
        if s is None:
            return []
        current = None
        for name, value in zip(s.metric_names, metrics.values):
            if name == MONITOR:
                current = None if math.isnan(value) else value
                break
        stop = False
        if current is not None:
            if not s.has_best or current < s.best - s.min_delta:
                s.best, s.best_epoch, s.has_best, s.wait = current, metrics.epoch, True, 0
            else:
                s.wait = min(s.wait + 1, U32_MAX)
                stop = s.wait >= s.patience
        decisions = [types.Decision_LogMetric(types.Metric(name=METRIC, value=float(s.wait)))]
        if stop:
            plural = "" if s.wait == 1 else "s"
            reason = (
                f"early-stop: {MONITOR} did not improve for {s.wait} epoch{plural} "
                f"(best {s.best:.4f} at epoch {s.best_epoch})"
            )
            host.log(host.Level.INFO, reason)
            decisions.append(types.Decision_StopTraining(reason))
        return decisions

    def snapshot_state(self):
        s = STATE
        if s is None:
            return b""
        return struct.pack("<BIdIB", STATE_VERSION, s.wait, s.best, s.best_epoch, int(s.has_best))

    def restore_state(self, state):
        s = STATE
        if s is None:
            raise Err("restore-state was called before a successful init")
        r = StateReader(bytes(state))
        wait = r.take("<I", "u32")
        best = r.take("<d", "f64")
        best_epoch = r.take("<I", "u32")
        has_best = r.bool()
        r.finish()
        s.wait, s.best, s.best_epoch, s.has_best = wait, best, best_epoch, has_best

    # Not subscribed: the host never calls these.
    def on_epoch_start(self, info):
        return []

    def on_batch_start(self, info):
        return []

    def on_batch_end(self, metrics):
        return []

    def on_validation_end(self, metrics):
        return []

    def on_checkpoint_saved(self, info):
        return []

    def on_train_end(self, info):
        return []

    def on_fault(self, info):
        return []
