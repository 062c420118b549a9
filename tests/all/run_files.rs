//! The run directory's files speak one language: every state, kind and outcome is a kebab-case
//! name (`callback-fault`, `restarted`, `stopped`), never a Rust variant name, in every file.

use std::path::Path;

use serde_json::Value;

use crate::common::{WatGuest, jsonl, kind, quick_config, summary, train};

/// Fields whose values are names of states or kinds, wherever they appear.
const NAME_FIELDS: [&str; 8] = [
    "outcome", "status", "action", "kind", "event", "during", "level", "on_fault",
];

fn check_names(value: &Value, file: &str, problems: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                if NAME_FIELDS.contains(&key.as_str())
                    && let Some(name) = v.as_str()
                {
                    let kebab = !name.is_empty()
                        && name
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
                    if !kebab {
                        problems.push(format!("{file}: {key} = {name:?}"));
                    }
                }
                check_names(v, file, problems);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| check_names(v, file, problems)),
        _ => {}
    }
}

#[test]
fn every_state_in_the_run_files_is_a_kebab_case_name() {
    let dir = tempfile::tempdir().unwrap();
    // A callback that traps at every epoch end (restarted, then disabled), one that hears of
    // faults, and a stop.
    let trapper = WatGuest::new(&[kind::EPOCH_END])
        .body("on-epoch-end", "unreachable")
        .write(dir.path(), "trapper");
    let listener = WatGuest::new(&[kind::FAULT, kind::CHECKPOINT_SAVED, kind::TRAIN_END])
        .write(dir.path(), "listener");
    let run = dir.path().join("run");
    let mut config = quick_config(8);
    config.push_callback(trapper.to_str().unwrap()).unwrap();
    config.push_callback(listener.to_str().unwrap()).unwrap();
    config.push_callback("logger").unwrap();
    config
        .push_callback("early-stopping:monitor=loss,min_delta=10,patience=4")
        .unwrap();
    train(config, &run);

    let mut problems = Vec::new();
    for file in [
        "events.jsonl",
        "decisions.jsonl",
        "faults.jsonl",
        "log.jsonl",
        "metrics.jsonl",
    ] {
        let lines = jsonl(&run, file);
        assert!(
            !lines.is_empty(),
            "{file} is empty: the run exercised too little"
        );
        lines
            .iter()
            .for_each(|l| check_names(l, file, &mut problems));
    }
    for file in ["summary.json", "config.json"] {
        let value: Value =
            serde_json::from_slice(&std::fs::read(Path::new(&run).join(file)).unwrap()).unwrap();
        check_names(&value, file, &mut problems);
    }
    assert!(problems.is_empty(), "not kebab-case: {problems:#?}");

    // And the ones this run must have produced are there, spelled as the docs say.
    let s = summary(&run);
    assert_eq!(s["outcome"], "stopped");
    let events = jsonl(&run, "events.jsonl");
    let faults: Vec<&Value> = events.iter().filter(|e| e["event"] == "fault").collect();
    assert!(
        faults.iter().all(|f| f["kind"] == "callback-fault"),
        "{faults:?}"
    );
    assert!(!faults.is_empty());
    let records = jsonl(&run, "faults.jsonl");
    assert_eq!(records[0]["kind"], "trap");
    assert_eq!(records[0]["action"], "restarted");
    let trapper_report = &s["callbacks"][0];
    assert_eq!(trapper_report["status"], "disabled");
    assert_eq!(s["callbacks"][1]["status"], "active");
}
