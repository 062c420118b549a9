//! The guest ABI end to end: what a Rust callback built on the guest SDK receives is exactly
//! what the host delivered, field by field, for every per-batch and per-epoch event.
//!
//! `tests/fixtures/echo-guest` answers each event with one `log-metric` decision per field it
//! received. The run directory records both sides: `events.jsonl` what the host delivered,
//! `decisions.jsonl` what came back. Two fields of the same type swapped anywhere between the two
//! (the WIT, the host's lowering, the SDK's exports) make an echo differ from its event; the test
//! also checks that the run gives every pair of fields different values somewhere, so that such
//! a swap cannot hide behind equal numbers.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::common::{jsonl, quick_config, train, wasip2_guest};

/// The events the echo guest subscribes to, with the snake_case prefix of its metric names.
const ECHOED: [(&str, &str); 5] = [
    ("epoch-start", "echo.epoch_start"),
    ("batch-start", "echo.batch_start"),
    ("batch-end", "echo.batch_end"),
    ("validation-end", "echo.validation_end"),
    ("epoch-end", "echo.epoch_end"),
];

/// A number as `events.jsonl` and `decisions.jsonl` write it: JSON numbers, and the strings
/// `"NaN"`, `"inf"` and `"-inf"` for the values JSON has no numbers for.
fn number(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().expect("a JSON number is an f64"),
        Value::String(s) => match s.as_str() {
            "NaN" => f64::NAN,
            "inf" => f64::INFINITY,
            "-inf" => f64::NEG_INFINITY,
            other => panic!("{other:?} is not a number"),
        },
        other => panic!("{other} is not a number"),
    }
}

/// Equal numbers, NaN equal to NaN (a metric with no value this epoch is NaN on both sides).
fn same(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

/// Each field of a delivered event under the metric name the echo guest gives it: the record's
/// fields by name, `epoch-end`'s values by the metric names of `train-start`.
fn fields(event: &Value, prefix: &str, metric_names: &[String]) -> BTreeMap<String, f64> {
    let object = event.as_object().expect("an event is a JSON object");
    let mut fields = BTreeMap::new();
    for (key, value) in object {
        match key.as_str() {
            "event" => {}
            "values" => {
                let values = value.as_array().expect("epoch-end values are a list");
                assert_eq!(
                    values.len(),
                    metric_names.len(),
                    "one value per metric name"
                );
                for (name, v) in metric_names.iter().zip(values) {
                    fields.insert(format!("{prefix}.{name}"), number(v));
                }
            }
            _ => {
                fields.insert(format!("{prefix}.{key}"), number(value));
            }
        }
    }
    fields
}

/// Every field of `epoch-info`, `batch-info`, `batch-metrics`, `validation-metrics` and
/// `epoch-metrics` that the host delivered in a real run reaches an SDK callback as the same
/// field with the same value.
#[test]
fn an_sdk_callback_receives_every_field_of_every_event_as_delivered() {
    let wasm = wasip2_guest("echo-guest");
    let dir = tempfile::tempdir().unwrap();
    // Two epochs: in the second, an event's epoch, batch and step all differ.
    let mut config = quick_config(2);
    config.push_callback(wasm.to_str().unwrap()).unwrap();
    for callback in &mut config.callbacks {
        callback.inert_wasi = true; // Rust's wasm32-wasip2 standard library imports wasi:filesystem
    }
    let summary = train(config, dir.path());
    assert_eq!(summary.epochs_completed, 2, "{summary:?}");

    let events = jsonl(dir.path(), "events.jsonl");
    let decisions = jsonl(dir.path(), "decisions.jsonl");
    let metric_names: Vec<String> = events
        .iter()
        .find(|e| e["event"] == "train-start")
        .and_then(|e| e["metric_names"].as_array())
        .expect("train-start with its metric names")
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    assert!(metric_names.len() >= 6, "{metric_names:?}");

    for (kind, prefix) in ECHOED {
        let delivered: Vec<&Value> = events.iter().filter(|e| e["event"] == kind).collect();
        // The echoes of one event: its decisions, consecutive, under the event's epoch and step.
        let mut echoes: Vec<((u64, u64), BTreeMap<String, f64>)> = Vec::new();
        for d in decisions.iter().filter(|d| d["event"] == kind) {
            assert_eq!(d["decision"]["kind"], "log-metric", "{d}");
            let at = (d["epoch"].as_u64().unwrap(), d["step"].as_u64().unwrap());
            if echoes.last().is_none_or(|(last, _)| *last != at) {
                echoes.push((at, BTreeMap::new()));
            }
            let name = d["decision"]["name"].as_str().unwrap().to_string();
            let value = number(&d["decision"]["value"]);
            let fields = &mut echoes.last_mut().unwrap().1;
            assert!(
                fields.insert(name, value).is_none(),
                "a field echoed twice: {d}"
            );
        }
        assert!(!delivered.is_empty(), "no {kind} delivered");
        assert_eq!(delivered.len(), echoes.len(), "one echo per {kind}");

        let mut all_fields = Vec::new();
        for (event, (at, echoed)) in delivered.iter().zip(&echoes) {
            let expected = fields(event, prefix, &metric_names);
            let event_at = (
                event["epoch"].as_u64().unwrap(),
                event["step"].as_u64().unwrap(),
            );
            assert_eq!(*at, event_at, "echo of {event} recorded at another event");
            let names: Vec<&String> = expected.keys().collect();
            assert_eq!(
                echoed.keys().collect::<Vec<_>>(),
                names,
                "the fields of {event}"
            );
            for (name, value) in &expected {
                assert!(
                    same(echoed[name], *value),
                    "{name}: the callback received {} where the host delivered {value} ({event})",
                    echoed[name]
                );
            }
            all_fields.push(expected);
        }

        // The run must tell every two fields of the event apart somewhere, or a swap of the two
        // would echo the same numbers and pass.
        let names: Vec<&String> = all_fields[0].keys().collect();
        for (i, a) in names.iter().enumerate() {
            for b in &names[i + 1..] {
                assert!(
                    all_fields.iter().any(|f| !same(f[*a], f[*b])),
                    "{a} and {b} are equal in every {kind} of this run: a swap would go unseen"
                );
            }
        }
    }
}
