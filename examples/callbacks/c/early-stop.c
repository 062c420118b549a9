// early-stop: the example callback of docs/writing-callbacks.md, in C (wit-bindgen's C generator,
// clang and wasi-libc).
//
// Stops training when `val_loss` has not improved by more than `min_delta` for `patience` epochs.
// Parameters: `patience` (default 3), `min_delta` (default 0). Its decisions, error messages and
// state bytes are the same as those of the Rust, Python and JavaScript versions: see
// examples/callbacks/rust/src/lib.rs for the reference.
//
// Build: ./build.sh (generates bindings/ with `wit-bindgen c`, compiles, makes the component).
//
// Memory, as wit-bindgen's C bindings define it: an exported function owns its arguments (it
// frees them) and returns malloc'ed results, which the generated post-return functions free.

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "callback_world.h"

typedef callback_world_string_t string_t;
typedef exports_trainrt_callbacks_callback_decision_t decision_t;
typedef exports_trainrt_callbacks_callback_list_decision_t decisions_t;

#define MONITOR "val_loss"
#define METRIC "epochs_since_best"
#define STATE_VERSION 1
#define STATE_BYTES 18

// The one instance, set up by `init`; events before a successful init get no decisions.
static struct {
    bool ready;
    uint32_t patience;
    double min_delta;
    // Index of `val_loss` in run-info.metric-names, or -1.
    long monitor_index;
    uint32_t wait;
    double best;
    uint32_t best_epoch;
    bool has_best;
} cb;

// ---- strings ------------------------------------------------------------------------------------

// A growable byte string; the bytes of `key=value` parameters are copied as given (they need not
// be NUL-terminated, and may hold any UTF-8).
typedef struct {
    uint8_t *ptr;
    size_t len;
} buf_t;

static void buf_bytes(buf_t *b, const void *bytes, size_t len) {
    uint8_t *grown = realloc(b->ptr, b->len + len + 1);
    if (grown == NULL) abort();
    memcpy(grown + b->len, bytes, len);
    b->ptr = grown;
    b->len += len;
}

static void buf_str(buf_t *b, const string_t *s) { buf_bytes(b, s->ptr, s->len); }

static void buf_printf(buf_t *b, const char *fmt, ...) {
    char tmp[256];
    va_list args;
    va_start(args, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, args);
    va_end(args);
    if (n < 0 || (size_t)n >= sizeof tmp) abort();
    buf_bytes(b, tmp, (size_t)n);
}

static string_t buf_into_string(buf_t *b) {
    return (string_t){.ptr = b->ptr, .len = b->len};
}

static bool str_eq(const string_t *s, const char *lit) {
    size_t n = strlen(lit);
    return s->len == n && memcmp(s->ptr, lit, n) == 0;
}

// Length of the white-space character at the start (or end) of s[0..n), 0 if none: the Unicode
// White_Space set that Rust's `str::trim` removes, so values parse as in the Rust SDK.
static size_t ws_3byte(const uint8_t *p) {
    if (p[0] == 0xE1 && p[1] == 0x9A && p[2] == 0x80) return 3;                 // U+1680
    if (p[0] == 0xE2 && p[1] == 0x80 &&
        ((p[2] >= 0x80 && p[2] <= 0x8A) || p[2] == 0xA8 || p[2] == 0xA9 || p[2] == 0xAF))
        return 3;                                                               // U+2000..200A, 2028, 2029, 202F
    if (p[0] == 0xE2 && p[1] == 0x81 && p[2] == 0x9F) return 3;                 // U+205F
    if (p[0] == 0xE3 && p[1] == 0x80 && p[2] == 0x80) return 3;                 // U+3000
    return 0;
}

static size_t ws_at_start(const uint8_t *s, size_t n) {
    if (n >= 1 && (s[0] == ' ' || (s[0] >= '\t' && s[0] <= '\r'))) return 1;
    if (n >= 2 && s[0] == 0xC2 && (s[1] == 0x85 || s[1] == 0xA0)) return 2;     // U+0085, U+00A0
    if (n >= 3) return ws_3byte(s);
    return 0;
}

static size_t ws_at_end(const uint8_t *s, size_t n) {
    if (n >= 1 && (s[n - 1] == ' ' || (s[n - 1] >= '\t' && s[n - 1] <= '\r'))) return 1;
    if (n >= 2 && s[n - 2] == 0xC2 && (s[n - 1] == 0x85 || s[n - 1] == 0xA0)) return 2;
    if (n >= 3) return ws_3byte(s + n - 3);
    return 0;
}

// The trimmed value as a NUL-terminated copy (caller frees).
static char *trimmed(const string_t *s) {
    const uint8_t *p = s->ptr;
    size_t n = s->len, k;
    while ((k = ws_at_start(p, n)) != 0) p += k, n -= k;
    while ((k = ws_at_end(p, n)) != 0) n -= k;
    char *out = malloc(n + 1);
    if (out == NULL) abort();
    memcpy(out, p, n);
    out[n] = '\0';
    return out;
}

// ---- parameters ---------------------------------------------------------------------------------

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Rust's `u32` syntax: an optional `+`, then ASCII digits, at most 4294967295.
static bool parse_u32(const char *s, uint32_t *out) {
    if (*s == '+') s++;
    if (*s == '\0') return false;
    uint64_t v = 0;
    for (; *s != '\0'; s++) {
        if (!is_digit(*s)) return false;
        v = v * 10 + (uint64_t)(*s - '0');
        if (v > UINT32_MAX) return false;
    }
    *out = (uint32_t)v;
    return true;
}

// Rust's `f64` syntax (without inf/nan, which are rejected anyway): [+-] then digits with an
// optional point (at least one digit), then an optional exponent. Finite and >= 0.
static bool parse_non_negative(const char *s, double *out) {
    const char *p = s;
    size_t digits = 0;
    if (*p == '+' || *p == '-') p++;
    while (is_digit(*p)) p++, digits++;
    if (*p == '.') {
        p++;
        while (is_digit(*p)) p++, digits++;
    }
    if (digits == 0) return false;
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-') p++;
        if (!is_digit(*p)) return false;
        while (is_digit(*p)) p++;
    }
    if (*p != '\0') return false;
    double v = strtod(s, NULL); // correctly rounded, like Rust's parser
    if (!isfinite(v) || !(v >= 0.0)) return false;
    *out = v;
    return true;
}

// Sets *err to "parameter KEY=VALUE: expected EXPECTED".
static void param_error(string_t *err, const char *key, const string_t *value, const char *expected) {
    buf_t b = {0};
    buf_printf(&b, "parameter %s=", key);
    buf_str(&b, value);
    buf_printf(&b, ": expected %s", expected);
    *err = buf_into_string(&b);
}

static bool read_params(const exports_trainrt_callbacks_callback_list_config_entry_t *config,
                        uint32_t *patience, double *min_delta, string_t *err) {
    const exports_trainrt_callbacks_callback_config_entry_t *e = config->ptr;
    size_t n = config->len;
    const string_t *patience_raw = NULL, *min_delta_raw = NULL;
    // As the Rust SDK: empty or repeated keys first, then each parameter's value, then unknown keys.
    for (size_t i = 0; i < n; i++) {
        if (e[i].key.len == 0) {
            buf_t b = {0};
            buf_printf(&b, "parameter =");
            buf_str(&b, &e[i].value);
            buf_printf(&b, ": the parameter name is empty");
            *err = buf_into_string(&b);
            return false;
        }
        for (size_t j = 0; j < i; j++) {
            if (e[j].key.len == e[i].key.len && memcmp(e[j].key.ptr, e[i].key.ptr, e[i].key.len) == 0) {
                buf_t b = {0};
                buf_printf(&b, "parameter ");
                buf_str(&b, &e[i].key);
                buf_printf(&b, " is given twice (");
                buf_str(&b, &e[i].key);
                buf_printf(&b, "=");
                buf_str(&b, &e[j].value);
                buf_printf(&b, " and ");
                buf_str(&b, &e[i].key);
                buf_printf(&b, "=");
                buf_str(&b, &e[i].value);
                buf_printf(&b, ")");
                *err = buf_into_string(&b);
                return false;
            }
        }
        if (str_eq(&e[i].key, "patience")) patience_raw = &e[i].value;
        if (str_eq(&e[i].key, "min_delta")) min_delta_raw = &e[i].value;
    }
    *patience = 3;
    if (patience_raw != NULL) {
        char *s = trimmed(patience_raw);
        bool ok = parse_u32(s, patience);
        free(s);
        if (!ok) {
            param_error(err, "patience", patience_raw, "a non-negative integer");
            return false;
        }
    }
    *min_delta = 0.0;
    if (min_delta_raw != NULL) {
        char *s = trimmed(min_delta_raw);
        bool ok = parse_non_negative(s, min_delta);
        free(s);
        if (!ok) {
            param_error(err, "min_delta", min_delta_raw, "a non-negative number");
            return false;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (!str_eq(&e[i].key, "patience") && !str_eq(&e[i].key, "min_delta")) {
            buf_t b = {0};
            buf_printf(&b, "unknown parameter '");
            buf_str(&b, &e[i].key);
            buf_printf(&b, "'; known parameters: patience, min_delta");
            *err = buf_into_string(&b);
            return false;
        }
    }
    return true;
}

// ---- exports ------------------------------------------------------------------------------------

bool exports_trainrt_callbacks_callback_init(exports_trainrt_callbacks_callback_list_config_entry_t *config,
                                             exports_trainrt_callbacks_callback_registration_t *ret,
                                             string_t *err) {
    uint32_t patience;
    double min_delta;
    bool ok = read_params(config, &patience, &min_delta, err);
    exports_trainrt_callbacks_callback_list_config_entry_free(config);
    if (!ok) return false;
    cb.ready = true;
    cb.patience = patience;
    cb.min_delta = min_delta;
    cb.monitor_index = -1;
    cb.wait = 0;
    cb.best = INFINITY;
    cb.best_epoch = 0;
    cb.has_best = false;
    trainrt_callbacks_types_event_kind_t *events = malloc(2 * sizeof *events);
    if (events == NULL) abort();
    events[0] = TRAINRT_CALLBACKS_TYPES_EVENT_KIND_TRAIN_START;
    events[1] = TRAINRT_CALLBACKS_TYPES_EVENT_KIND_EPOCH_END;
    ret->events = (trainrt_callbacks_types_list_event_kind_t){.ptr = events, .len = 2};
    ret->batch_every = 0;
    return true;
}

void exports_trainrt_callbacks_callback_on_train_start(exports_trainrt_callbacks_callback_run_info_t *info,
                                                       decisions_t *ret) {
    // Epoch-end values come in the order of these names; remember where `val_loss` is.
    if (cb.ready) {
        cb.monitor_index = -1;
        for (size_t i = 0; i < info->metric_names.len; i++) {
            if (str_eq(&info->metric_names.ptr[i], MONITOR)) {
                cb.monitor_index = (long)i;
                break;
            }
        }
    }
    exports_trainrt_callbacks_callback_run_info_free(info);
    *ret = (decisions_t){0};
}

void exports_trainrt_callbacks_callback_on_epoch_end(exports_trainrt_callbacks_callback_epoch_metrics_t *metrics,
                                                     decisions_t *ret) {
    *ret = (decisions_t){0};
    if (!cb.ready) {
        exports_trainrt_callbacks_callback_epoch_metrics_free(metrics);
        return;
    }
    double value = NAN;
    if (cb.monitor_index >= 0 && (size_t)cb.monitor_index < metrics->values.len)
        value = metrics->values.ptr[cb.monitor_index];
    uint32_t epoch = metrics->epoch;
    exports_trainrt_callbacks_callback_epoch_metrics_free(metrics);

    bool stop = false;
    if (!isnan(value)) {
        if (!cb.has_best || value < cb.best - cb.min_delta) {
            cb.best = value;
            cb.best_epoch = epoch;
            cb.has_best = true;
            cb.wait = 0;
        } else {
            if (cb.wait < UINT32_MAX) cb.wait++;
            stop = cb.wait >= cb.patience;
        }
    }

    decision_t *d = calloc(2, sizeof *d);
    if (d == NULL) abort();
    d[0].tag = TRAINRT_CALLBACKS_TYPES_DECISION_LOG_METRIC;
    callback_world_string_dup(&d[0].val.log_metric.name, METRIC);
    d[0].val.log_metric.value = (double)cb.wait;
    size_t count = 1;
    if (stop) {
        buf_t b = {0};
        // %.4f: the exact value rounded half to even, like Rust's {:.4} and Python's :.4f.
        buf_printf(&b, "early-stop: %s did not improve for %u epoch%s (best %.4f at epoch %u)", MONITOR,
                   cb.wait, cb.wait == 1 ? "" : "s", cb.best, cb.best_epoch);
        string_t reason = buf_into_string(&b);
        trainrt_callbacks_host_log(TRAINRT_CALLBACKS_HOST_LEVEL_INFO, &reason);
        d[1].tag = TRAINRT_CALLBACKS_TYPES_DECISION_STOP_TRAINING;
        d[1].val.stop_training = reason; // freed by the post-return function
        count = 2;
    }
    *ret = (decisions_t){.ptr = d, .len = count};
}

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
    return v;
}

// State: version byte 1, then little-endian wait: u32, best: f64, best_epoch: u32, has_best: bool.
void exports_trainrt_callbacks_callback_snapshot_state(callback_world_list_u8_t *ret) {
    *ret = (callback_world_list_u8_t){0};
    if (!cb.ready) return;
    uint8_t *p = malloc(STATE_BYTES);
    if (p == NULL) abort();
    uint64_t bits;
    memcpy(&bits, &cb.best, sizeof bits);
    p[0] = STATE_VERSION;
    put_u32(p + 1, cb.wait);
    put_u32(p + 5, (uint32_t)bits);
    put_u32(p + 9, (uint32_t)(bits >> 32));
    put_u32(p + 13, cb.best_epoch);
    p[17] = cb.has_best ? 1 : 0;
    *ret = (callback_world_list_u8_t){.ptr = p, .len = STATE_BYTES};
}

// The Rust SDK's StateReader messages, for a state that is not ours.
static bool state_error(string_t *err, const char *fmt, ...) {
    char tmp[128];
    va_list args;
    va_start(args, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, args);
    va_end(args);
    callback_world_string_dup(err, tmp);
    return false;
}

static bool restore(const uint8_t *p, size_t n, string_t *err) {
    if (!cb.ready) return state_error(err, "restore-state was called before a successful init");
    if (n == 0) return state_error(err, "callback state is empty");
    if (p[0] != STATE_VERSION)
        return state_error(err, "callback state has format version %u, expected %u", p[0], STATE_VERSION);
    if (n < 5) return state_error(err, "callback state is truncated (reading u32)");
    if (n < 13) return state_error(err, "callback state is truncated (reading f64)");
    if (n < 17) return state_error(err, "callback state is truncated (reading u32)");
    if (n < 18) return state_error(err, "callback state is truncated (reading bool)");
    if (p[17] > 1) return state_error(err, "callback state is corrupt (bool byte %u)", p[17]);
    if (n > 18) return state_error(err, "callback state has %zu unexpected trailing bytes", n - 18);
    uint64_t bits = (uint64_t)get_u32(p + 5) | (uint64_t)get_u32(p + 9) << 32;
    cb.wait = get_u32(p + 1);
    memcpy(&cb.best, &bits, sizeof bits);
    cb.best_epoch = get_u32(p + 13);
    cb.has_best = p[17] == 1;
    return true;
}

bool exports_trainrt_callbacks_callback_restore_state(callback_world_list_u8_t *state, string_t *err) {
    bool ok = restore(state->ptr, state->len, err);
    callback_world_list_u8_free(state);
    return ok;
}

// Not subscribed: the host never calls these.

void exports_trainrt_callbacks_callback_on_epoch_start(exports_trainrt_callbacks_callback_epoch_info_t *info,
                                                       decisions_t *ret) {
    (void)info;
    *ret = (decisions_t){0};
}

void exports_trainrt_callbacks_callback_on_batch_start(exports_trainrt_callbacks_callback_batch_info_t *info,
                                                       decisions_t *ret) {
    (void)info;
    *ret = (decisions_t){0};
}

void exports_trainrt_callbacks_callback_on_batch_end(exports_trainrt_callbacks_callback_batch_metrics_t *metrics,
                                                     decisions_t *ret) {
    (void)metrics;
    *ret = (decisions_t){0};
}

void exports_trainrt_callbacks_callback_on_validation_end(
    exports_trainrt_callbacks_callback_validation_metrics_t *metrics, decisions_t *ret) {
    (void)metrics;
    *ret = (decisions_t){0};
}

void exports_trainrt_callbacks_callback_on_checkpoint_saved(exports_trainrt_callbacks_callback_checkpoint_info_t *info,
                                                            decisions_t *ret) {
    exports_trainrt_callbacks_callback_checkpoint_info_free(info);
    *ret = (decisions_t){0};
}

void exports_trainrt_callbacks_callback_on_train_end(exports_trainrt_callbacks_callback_train_end_info_t *info,
                                                     decisions_t *ret) {
    exports_trainrt_callbacks_callback_train_end_info_free(info);
    *ret = (decisions_t){0};
}

void exports_trainrt_callbacks_callback_on_fault(exports_trainrt_callbacks_callback_fault_info_t *info,
                                                 decisions_t *ret) {
    exports_trainrt_callbacks_callback_fault_info_free(info);
    *ret = (decisions_t){0};
}
