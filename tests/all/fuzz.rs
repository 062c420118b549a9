//! Property-based fuzzing of everything a guest or a user hands the host: component bytes,
//! decisions (typed and as raw canonical-ABI bytes) and event values. A bounded number of cases
//! runs with the test suite; the long run is one command (docs/security.md):
//!
//! ```text
//! PROPTEST_CASES=20000 cargo test --release -p trainrt --test all fuzz::
//! ```

use std::collections::BTreeSet;

use crate::common::{
    Decision as Guest, WatGuest, deciding_guest, jsonl, kind, quick_config, sandbox,
};
use proptest::prelude::*;
use trainrt::callback::{CallbackInstance, CompiledCallback};
use trainrt::contract::Decision;
use trainrt::decision::{DecisionPolicy, validate};
use trainrt::trainer::{Quiet, RunRequest};

/// Cases per property unless `PROPTEST_CASES` says otherwise: enough to catch regressions in
/// the suite's time budget on two cores.
fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Strings a hostile guest would try: path tricks, reserved names, control characters, huge.
fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("../../etc/passwd".to_string()),
        Just("last".to_string()),
        Just(".hidden".to_string()),
        Just("a/b".to_string()),
        Just("loss".to_string()),
        Just("x".repeat(65)),
        "[A-Za-z0-9_.-]{1,70}",
        any::<String>(),
    ]
}

/// Floats with every awkward value well represented.
fn nasty_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(0.0),
        Just(-0.0),
        Just(f64::MIN_POSITIVE / 2.0),
        Just(1e300),
        -1.0..1.0f64,
        any::<f64>(),
    ]
}

fn decision() -> impl Strategy<Value = Decision> {
    prop_oneof![
        nasty_string().prop_map(Decision::StopTraining),
        Just(Decision::EndEpoch),
        nasty_string().prop_map(Decision::SaveCheckpoint),
        nasty_f64().prop_map(Decision::SetLearningRate),
        nasty_string().prop_map(Decision::RestoreCheckpoint),
        Just(Decision::ValidateNow),
        (nasty_string(), nasty_f64()).prop_map(|(n, v)| Decision::LogMetric(
            trainrt::contract::Metric { name: n, value: v }
        )),
    ]
}

proptest! {
    #![proptest_config(cases(256))]

    /// Whatever a guest asks for, what validation lets through is safe to apply: learning rates
    /// finite and within the operator's bounds, tags that can only ever name a file inside the
    /// checkpoint directory, restores only of checkpoints that exist, no built-in metric names.
    #[test]
    fn validation_lets_through_only_safe_decisions(d in decision()) {
        let policy = DecisionPolicy::default();
        let known: BTreeSet<String> = ["best".to_string()].into();
        let Ok(valid) = validate(d, &policy, &known) else { return Ok(()) };
        let safe_tag = |t: &str| {
            !t.is_empty()
                && t.len() <= 64
                && !t.starts_with('.')
                && t.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        };
        match valid {
            Decision::SetLearningRate(lr) => {
                prop_assert!(lr.is_finite() && lr >= policy.min_lr && lr <= policy.max_lr, "{lr}");
            }
            Decision::SaveCheckpoint(tag) => prop_assert!(safe_tag(&tag) && tag != "last", "{tag:?}"),
            Decision::RestoreCheckpoint(tag) => prop_assert!(known.contains(&tag), "{tag:?}"),
            Decision::LogMetric(m) => {
                prop_assert!(!trainrt::events::is_builtin_metric(&m.name), "{:?}", m.name);
                prop_assert!(!m.name.is_empty() && !m.name.chars().any(char::is_control));
            }
            Decision::StopTraining(reason) => {
                prop_assert!(!reason.chars().any(char::is_control), "{reason:?}");
            }
            Decision::EndEpoch | Decision::ValidateNow => {}
        }
    }
}

proptest! {
    #![proptest_config(cases(64))]

    /// Arbitrary bytes, with or without a component header, are rejected with an error.
    #[test]
    fn the_loader_rejects_arbitrary_bytes(
        header in prop_oneof![Just(vec![]), Just(b"\0asm\x0d\0\x01\0".to_vec()), Just(b"\0asm\x01\0\0\0".to_vec())],
        body in prop::collection::vec(any::<u8>(), 0..2048),
    ) {
        let bytes = [header, body].concat();
        prop_assert!(CompiledCallback::new(&sandbox(), "fuzz", &bytes).is_err());
    }
}

proptest! {
    #![proptest_config(cases(24))]

    /// A real callback component with bytes flipped, or cut short, either fails to load with an
    /// error or loads and starts (or fails to start) cleanly: never a panic.
    #[test]
    fn the_loader_survives_mutated_components(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let mut bytes = trainrt::bundled::component("terminate-on-nan").unwrap().to_vec();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if let Some(at) = cut {
            bytes.truncate(at.index(bytes.len()));
        }
        if let Ok(compiled) = CompiledCallback::new(&sandbox(), "mutant", &bytes) {
            let _ = CallbackInstance::start(
                &sandbox(),
                std::sync::Arc::new(compiled),
                &[],
                &trainrt::Limits::default(),
            );
        }
    }

    /// A guest returning arbitrary bytes as its list of decisions (bad discriminants, strings
    /// pointing anywhere, invalid UTF-8, NaNs) is either understood and validated, or faulted as
    /// invalid output; the run always completes and its directory stays consistent.
    #[test]
    fn raw_decision_bytes_are_validated_or_faulted(
        raw in prop::collection::vec(any::<u8>(), 24..(24 * 6)),
        strings in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let n = raw.len() / 24;
        let guest = WatGuest::new(&[kind::EPOCH_END])
            .data(256, &raw[..n * 24])
            .data(2048, &strings)
            .body("on-epoch-end", &format!("(return (call $decisions (i32.const {n})))"));
        check_run(guest)?;
    }

    /// Arbitrary sequences of well-formed decisions drive a real run: whatever is accepted is
    /// applied at its fixed point, the rest is rejected and recorded, and the run stays loadable.
    #[test]
    fn decision_sequences_keep_the_run_consistent(ds in prop::collection::vec(decision(), 0..6)) {
        let owned: Vec<Guest<'_>> = ds.iter().map(|d| match d {
            Decision::StopTraining(r) => Guest::Stop(r),
            Decision::EndEpoch => Guest::EndEpoch,
            Decision::SaveCheckpoint(t) => Guest::Save(t),
            Decision::SetLearningRate(v) => Guest::Lr(*v),
            Decision::RestoreCheckpoint(t) => Guest::Restore(t),
            Decision::ValidateNow => Guest::ValidateNow,
            Decision::LogMetric(m) => Guest::Metric(&m.name, m.value),
        }).collect();
        check_run(deciding_guest(&[kind::EPOCH_END], "on-epoch-end", &owned))?;
    }
}

/// Runs two epochs with `guest`; the run must end cleanly with a consistent directory.
fn check_run(guest: WatGuest) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = guest.write(dir.path(), "fuzzed");
    let run = dir.path().join("run");
    let mut config = quick_config(2);
    config.push_callback(path.to_str().unwrap()).unwrap();
    let summary = trainrt::train(
        sandbox(),
        RunRequest {
            config,
            run_dir: run.clone(),
            resume: false,
        },
        &mut Quiet,
    );
    let summary = summary.map_err(|e| TestCaseError::fail(format!("run failed: {e}")))?;
    prop_assert!(summary.outcome != trainrt::trainer::RunOutcome::Failed);
    trainrt::checkpoint::load(&run.join("checkpoints/last.safetensors"))
        .map_err(|e| TestCaseError::fail(format!("last checkpoint: {e}")))?;
    for f in jsonl(&run, "faults.jsonl") {
        prop_assert!(
            ["invalid-output", "invalid-decision"].contains(&f["kind"].as_str().unwrap()),
            "{f}"
        );
    }
    for d in jsonl(&run, "decisions.jsonl") {
        prop_assert!(
            ["applied", "rejected", "overridden"].contains(&d["status"].as_str().unwrap()),
            "{d}"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(256))]

    /// Event values survive the events.jsonl encoding: finite floats bit for bit, NaN and the
    /// infinities as themselves, so a replay sees what the run saw.
    #[test]
    fn event_floats_round_trip(v in nasty_f64()) {
        let json = serde_json::to_string(&trainrt::events::FloatJson(v)).unwrap();
        let back: trainrt::events::FloatJson = serde_json::from_str(&json).unwrap();
        if v.is_nan() {
            prop_assert!(back.0.is_nan());
        } else {
            prop_assert_eq!(back.0.to_bits(), v.to_bits(), "{}", json);
        }
    }
}
