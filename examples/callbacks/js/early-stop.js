// early-stop: the example callback of docs/writing-callbacks.md, in JavaScript (componentize-js).
//
// Stops training when `val_loss` has not improved by more than `min_delta` for `patience` epochs.
// Parameters: `patience` (default 3), `min_delta` (default 0). Its decisions, error messages and
// state bytes are the same as those of the Rust, Python and C versions: see
// examples/callbacks/rust/src/lib.rs for the reference.
//
// Build: npm ci && npm run build   (writes build/early-stop.wasm)

import { log } from "trainrt:callbacks/host@0.1.0";

const MONITOR = "val_loss";
const METRIC = "epochs_since_best";
const STATE_VERSION = 1;
const U32_MAX = 0xffffffff;

// The characters Rust's `str::trim` removes (Unicode White_Space), so values parse as in the SDK.
const WHITESPACE =
  "\t\n\u000b\u000c\r \u0085\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007" +
  "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000";
// Rust's `u32` and (finite) `f64` syntax.
const U32_SYNTAX = /^\+?[0-9]+$/;
const F64_SYNTAX = /^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$/;

function trim(s) {
  let start = 0;
  let end = s.length;
  while (start < end && WHITESPACE.includes(s[start])) start++;
  while (end > start && WHITESPACE.includes(s[end - 1])) end--;
  return s.slice(start, end);
}

function paramError(key, value, expected) {
  return `parameter ${key}=${value}: expected ${expected}`;
}

function parseU32(text) {
  if (!U32_SYNTAX.test(text)) return null;
  const value = Number(text.replace(/^\+/, ""));
  return value <= U32_MAX ? value : null;
}

function parseNonNegative(text) {
  if (!F64_SYNTAX.test(text)) return null;
  const value = Number(text);
  return Number.isFinite(value) && value >= 0 ? value : null;
}

// `value` with 4 decimals, exactly as Rust's `{:.4}` (and C's `%.4f`, Python's `:.4f`) write it:
// the exact binary value rounded half to even, `-` kept for negative zero, `inf` for infinity.
// `toFixed` rounds ties up and switches to exponent notation from 1e21, so this uses BigInt.
function fixed4(value) {
  if (Number.isNaN(value)) return "NaN";
  const negative = value < 0 || Object.is(value, -0);
  if (!Number.isFinite(value)) return negative ? "-inf" : "inf";
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, Math.abs(value));
  const bits = view.getBigUint64(0);
  const biased = Number((bits >> 52n) & 0x7ffn);
  let mantissa = bits & ((1n << 52n) - 1n);
  let exponent = -1074;
  if (biased !== 0) {
    mantissa |= 1n << 52n;
    exponent = biased - 1075;
  }
  // |value| * 10^4 = num / den exactly.
  let num = mantissa * 10000n;
  let den = 1n;
  if (exponent >= 0) num <<= BigInt(exponent);
  else den <<= BigInt(-exponent);
  let q = num / den;
  const twice = 2n * (num % den);
  if (twice > den || (twice === den && (q & 1n) === 1n)) q += 1n;
  const digits = q.toString().padStart(5, "0");
  return `${negative ? "-" : ""}${digits.slice(0, -4)}.${digits.slice(-4)}`;
}

function parseConfig(entries) {
  const given = new Map();
  for (const { key, value } of entries) {
    if (key === "") throw `parameter =${value}: the parameter name is empty`;
    if (given.has(key)) {
      throw `parameter ${key} is given twice (${key}=${given.get(key)} and ${key}=${value})`;
    }
    given.set(key, value);
  }
  let patience = 3;
  if (given.has("patience")) {
    const raw = given.get("patience");
    patience = parseU32(trim(raw));
    if (patience === null) throw paramError("patience", raw, "a non-negative integer");
  }
  let minDelta = 0;
  if (given.has("min_delta")) {
    const raw = given.get("min_delta");
    minDelta = parseNonNegative(trim(raw));
    if (minDelta === null) throw paramError("min_delta", raw, "a non-negative number");
  }
  for (const key of given.keys()) {
    if (key !== "patience" && key !== "min_delta") {
      throw `unknown parameter '${key}'; known parameters: patience, min_delta`;
    }
  }
  return { patience, minDelta };
}

// The one instance, created by `init`; events before a successful init get no decisions.
let state = null;

// Reads the SDK's state format (version byte, then little-endian fields), with its messages.
class StateReader {
  constructor(bytes) {
    if (bytes.length === 0) throw "callback state is empty";
    if (bytes[0] !== STATE_VERSION) {
      throw `callback state has format version ${bytes[0]}, expected ${STATE_VERSION}`;
    }
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = 1;
  }
  take(size, what) {
    if (this.pos + size > this.view.byteLength) {
      throw `callback state is truncated (reading ${what})`;
    }
    const at = this.pos;
    this.pos += size;
    return at;
  }
  u32() {
    return this.view.getUint32(this.take(4, "u32"), true);
  }
  f64() {
    return this.view.getFloat64(this.take(8, "f64"), true);
  }
  bool() {
    const byte = this.view.getUint8(this.take(1, "bool"));
    if (byte > 1) throw `callback state is corrupt (bool byte ${byte})`;
    return byte === 1;
  }
  finish() {
    const rest = this.view.byteLength - this.pos;
    if (rest !== 0) throw `callback state has ${rest} unexpected trailing bytes`;
  }
}

const none = () => [];

export const callback = {
  init(config) {
    const { patience, minDelta } = parseConfig(config);
    state = {
      patience,
      minDelta,
      metricNames: [],
      wait: 0,
      best: Infinity,
      bestEpoch: 0,
      hasBest: false,
    };
    return { events: ["train-start", "epoch-end"], batchEvery: 0 };
  },

  onTrainStart(info) {
    if (state !== null) state.metricNames = Array.from(info.metricNames);
    return [];
  },

  onEpochEnd(metrics) {
    const s = state;
    if (s === null) return [];
    const index = s.metricNames.indexOf(MONITOR);
    const value = index >= 0 && index < metrics.values.length ? metrics.values[index] : NaN;
    let stop = false;
    if (!Number.isNaN(value)) {
      if (!s.hasBest || value < s.best - s.minDelta) {
        s.best = value;
        s.bestEpoch = metrics.epoch;
        s.hasBest = true;
        s.wait = 0;
      } else {
        s.wait = Math.min(s.wait + 1, U32_MAX);
        stop = s.wait >= s.patience;
      }
    }
    const decisions = [{ tag: "log-metric", val: { name: METRIC, value: s.wait } }];
    if (stop) {
      const plural = s.wait === 1 ? "" : "s";
      const reason =
        `early-stop: ${MONITOR} did not improve for ${s.wait} epoch${plural} ` +
        `(best ${fixed4(s.best)} at epoch ${s.bestEpoch})`;
      log("info", reason);
      decisions.push({ tag: "stop-training", val: reason });
    }
    return decisions;
  },

  snapshotState() {
    if (state === null) return new Uint8Array(0);
    const bytes = new Uint8Array(18);
    const view = new DataView(bytes.buffer);
    view.setUint8(0, STATE_VERSION);
    view.setUint32(1, state.wait, true);
    view.setFloat64(5, state.best, true);
    view.setUint32(13, state.bestEpoch, true);
    view.setUint8(17, state.hasBest ? 1 : 0);
    return bytes;
  },

  restoreState(bytes) {
    if (state === null) throw "restore-state was called before a successful init";
    const r = new StateReader(bytes);
    const wait = r.u32();
    const best = r.f64();
    const bestEpoch = r.u32();
    const hasBest = r.bool();
    r.finish();
    Object.assign(state, { wait, best, bestEpoch, hasBest });
  },

  // Not subscribed: the host never calls these.
  onEpochStart: none,
  onBatchStart: none,
  onBatchEnd: none,
  onValidationEnd: none,
  onCheckpointSaved: none,
  onTrainEnd: none,
  onFault: none,
};
