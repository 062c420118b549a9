//! `--sandbox [NAME:]key=value,...` and the `[callbacks.limits]` keys: one callback option set by
//! its config-file name, with durations and sizes in the units operators write.

use super::ConfigError;
use crate::callback::CallbackOptions;

/// The keys `--sandbox` accepts, for error messages.
const SANDBOX_KEYS: &str = "call_timeout, init_timeout, fuel_per_call, memory_bytes, \
    log_bytes_per_call, log_bytes_per_run, max_decisions_per_call, max_state_bytes, \
    max_component_bytes, compile_cpu_time, compile_memory_bytes, fuel_per_run, time_share, \
    time_grace, decisions_per_run, checkpoint_tags, checkpoint_saves_per_epoch, \
    checkpoint_bytes_per_run, metric_names, \
    validations_per_epoch, restores_per_epoch, on_fault, max_restarts, inert_wasi";

/// Sets one option by its config-file key. Durations take `ms` or `s` (bare numbers are
/// milliseconds), sizes take `KiB`, `MiB` or `GiB` (bare numbers are bytes).
fn set_option(entry: &mut CallbackOptions, key: &str, value: &str) -> Result<(), ConfigError> {
    let bad = |what: &str| ConfigError::Invalid {
        field: "sandbox",
        message: format!("{key}={value}: expected {what}"),
    };
    let l = &mut entry.limits;
    match key {
        "call_timeout" => {
            l.call_timeout = parse_millis(value).ok_or_else(|| bad("a duration like 50ms or 2s"))?
        }
        "init_timeout" => {
            l.init_timeout =
                parse_millis(value).ok_or_else(|| bad("a duration like 500ms or 2s"))?
        }
        "fuel_per_call" => {
            l.fuel_per_call = parse_count(value).ok_or_else(|| bad("a whole number"))?
        }
        "memory_bytes" => {
            l.memory_bytes = parse_size(value).ok_or_else(|| bad("a size like 64MiB"))?
        }
        "log_bytes_per_call" => {
            l.log_bytes_per_call = parse_size(value).ok_or_else(|| bad("a size like 16KiB"))?
        }
        "log_bytes_per_run" => {
            l.log_bytes_per_run = parse_size(value).ok_or_else(|| bad("a size like 1MiB"))?
        }
        "max_decisions_per_call" => {
            l.max_decisions_per_call = parse_usize(value).ok_or_else(|| bad("a whole number"))?
        }
        "max_state_bytes" => {
            l.max_state_bytes = parse_size(value).ok_or_else(|| bad("a size like 1MiB"))?
        }
        "max_component_bytes" => {
            l.max_component_bytes = parse_size(value).ok_or_else(|| bad("a size like 64MiB"))?
        }
        "compile_cpu_time" => {
            l.compile_cpu_time = parse_millis(value).ok_or_else(|| bad("a duration like 10s"))?
        }
        "compile_memory_bytes" => {
            l.compile_memory_bytes = parse_size(value).ok_or_else(|| bad("a size like 512MiB"))?
        }
        "fuel_per_run" => {
            l.fuel_per_run = parse_count(value).ok_or_else(|| bad("a whole number"))?
        }
        "time_share" => {
            l.time_share = value
                .parse::<f64>()
                .ok()
                .filter(|share| share.is_finite() && *share > 0.0)
                .ok_or_else(|| bad("a share of the run's time > 0, like 0.25"))?
        }
        "time_grace" => {
            l.time_grace = parse_millis(value).ok_or_else(|| bad("a duration like 1s"))?
        }
        "decisions_per_run" => {
            l.decisions_per_run = parse_count(value).ok_or_else(|| bad("a whole number"))?
        }
        "checkpoint_tags" => {
            l.checkpoint_tags = parse_usize(value).ok_or_else(|| bad("a whole number"))?
        }
        "checkpoint_saves_per_epoch" => {
            l.checkpoint_saves_per_epoch = value.parse().map_err(|_| bad("a whole number"))?
        }
        "checkpoint_bytes_per_run" => {
            l.checkpoint_bytes_per_run = parse_size(value)
                .map(|n| n as u64)
                .ok_or_else(|| bad("a size like 16GiB"))?
        }
        "metric_names" => {
            l.metric_names = parse_usize(value).ok_or_else(|| bad("a whole number"))?
        }
        "validations_per_epoch" => {
            l.validations_per_epoch = value.parse().map_err(|_| bad("a whole number"))?
        }
        "restores_per_epoch" => {
            l.restores_per_epoch = value.parse().map_err(|_| bad("a whole number"))?
        }
        "on_fault" => {
            entry.on_fault = value
                .parse()
                .map_err(|_| bad("restart, disable or abort"))?
        }
        "max_restarts" => entry.max_restarts = value.parse().map_err(|_| bad("a whole number"))?,
        "inert_wasi" => entry.inert_wasi = value.parse().map_err(|_| bad("true or false"))?,
        _ => {
            return Err(ConfigError::Invalid {
                field: "sandbox",
                message: format!("unknown key '{key}'; known keys: {SANDBOX_KEYS}"),
            });
        }
    }
    Ok(())
}

/// Applies `--sandbox [NAME:]key=value,...` flags, in order, to the callbacks named (or to every
/// callback when NAME is left out). A NAME that matches no callback is an error, so a typo cannot
/// leave a limit silently unset.
pub fn apply_sandbox_flags(
    entries: &mut [CallbackOptions],
    flags: &[String],
) -> Result<(), ConfigError> {
    for flag in flags {
        let (target, settings) = match flag.split_once(':') {
            Some((name, rest)) if !name.contains('=') => (Some(name), rest),
            _ => (None, flag.as_str()),
        };
        let matching: Vec<usize> = (0..entries.len())
            .filter(|&i| target.is_none_or(|t| entries[i].spec.name() == t))
            .collect();
        if matching.is_empty() {
            let names: Vec<String> = entries.iter().map(|e| e.spec.name()).collect();
            return Err(ConfigError::Invalid {
                field: "sandbox",
                message: match target {
                    Some(t) => format!(
                        "'{flag}': no callback named '{t}' (callbacks: {})",
                        if names.is_empty() {
                            "none".into()
                        } else {
                            names.join(", ")
                        }
                    ),
                    None => format!("'{flag}': there are no callbacks to apply it to"),
                },
            });
        }
        for pair in settings.split(',').filter(|p| !p.is_empty()) {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(ConfigError::Invalid {
                    field: "sandbox",
                    message: format!("'{pair}' is not key=value; known keys: {SANDBOX_KEYS}"),
                });
            };
            for &i in &matching {
                set_option(&mut entries[i], key.trim(), value.trim())?;
            }
        }
    }
    Ok(())
}

fn parse_count(value: &str) -> Option<u64> {
    value.replace('_', "").parse().ok()
}

fn parse_usize(value: &str) -> Option<usize> {
    parse_count(value).and_then(|n| usize::try_from(n).ok())
}

fn parse_millis(value: &str) -> Option<std::time::Duration> {
    let (number, scale) = if let Some(n) = value.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = value.strip_suffix('s') {
        (n, 1000)
    } else {
        (value, 1)
    };
    let ms = parse_count(number.trim())?.checked_mul(scale)?;
    (ms > 0).then(|| std::time::Duration::from_millis(ms))
}

fn parse_size(value: &str) -> Option<usize> {
    let units = [
        ("GiB", 1u64 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("B", 1),
    ];
    let (number, scale) = units
        .iter()
        .find_map(|(u, s)| value.strip_suffix(u).map(|n| (n, *s)))
        .unwrap_or((value, 1));
    let bytes = parse_count(number.trim())?.checked_mul(scale)?;
    usize::try_from(bytes).ok().filter(|&b| b > 0)
}
