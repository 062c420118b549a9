//! WASI guests, built from Rust for wasm32-wasip2 (`tests/fixtures/hostile-guest`): what the
//! sandbox grants them (inert filesystem and sockets only when the operator says so, captured
//! stdout and stderr within their budgets), and that a Rust panic is a contained, explained fault.

use std::path::Path;
use std::time::Duration;

use trainrt::callback::CallbackOptions;
use trainrt::host::CallbackHost;
use trainrt::sandbox::Limits;
use trainrt::trainer::RunOutcome;

use crate::common::{jsonl, quick_config, sandbox, train, wasip2_guest, weights};
use crate::sandbox_limits::{
    assert_output_cut_without_a_fault, assert_weights_untouched, fault_kinds,
};

/// Runs `epochs` epochs with the WASI guest `spec`, granted inert WASI, under `limits`.
fn run_wasi_guest(spec: &str, run: &Path, epochs: u32, limits: Limits) -> trainrt::RunSummary {
    let mut config = quick_config(epochs);
    config.push_callback(spec).unwrap();
    config.callbacks[0].inert_wasi = true;
    config.callbacks[0].limits = limits;
    train(config, run)
}

/// A component importing wasi:filesystem or wasi:sockets is refused unless the operator grants
/// inert WASI, and the refusal says how. Granted, those interfaces have nothing behind them: a
/// guest that tries to read a host file, list `/`, connect out or read the environment gets
/// errors and empty answers, and training goes on.
#[test]
fn filesystem_and_sockets_are_refused_by_default_and_inert_when_granted() {
    let wasm = wasip2_guest("hostile-guest");
    let spec: trainrt::CallbackSpec = format!("{}:mode=escape", wasm.display()).parse().unwrap();
    let refused = CallbackHost::start(sandbox(), &[CallbackOptions::new(spec)])
        .err()
        .expect("refused without inert_wasi")
        .to_string();
    assert!(
        refused.contains("wasi:filesystem")
            && refused.contains("wasi:sockets")
            && refused.contains("inert_wasi = true"),
        "{refused}"
    );

    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    run_wasi_guest(
        &format!("{}:mode=escape", wasm.display()),
        &run,
        1,
        Limits::default(),
    );
    assert!(
        fault_kinds(&run).is_empty(),
        "{:?}",
        jsonl(&run, "faults.jsonl")
    );
    let said: Vec<String> = jsonl(&run, "log.jsonl")
        .iter()
        .map(|l| l["message"].as_str().unwrap().to_string())
        .collect();
    let line = |prefix: &str| {
        said.iter()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no '{prefix}' line in {said:?}"))
            .clone()
    };
    assert!(
        line("escape: read /etc/passwd:").contains("Err("),
        "{said:?}"
    );
    assert!(line("escape: list /:").contains("Err("), "{said:?}");
    assert!(
        line("escape: connect 127.0.0.1:22:").contains("Err("),
        "{said:?}"
    );
    assert_eq!(line("escape: environment:"), "escape: environment: []");
}

/// A WASI-p2 guest runs under deny-by-default WASI and decides exactly as the same code built
/// without WASI.
#[test]
fn a_wasi_p2_guest_runs_and_decides_like_its_core_twin() {
    let wasm = wasip2_guest("early-stopping");
    let compiled = trainrt::CompiledCallback::new(
        &sandbox(),
        "wasi-early-stopping",
        &std::fs::read(&wasm).unwrap(),
    )
    .expect("a WASI-p2 component is accepted");
    let report = trainrt::inspect::report(&sandbox(), compiled.component());
    assert!(
        report
            .imports
            .iter()
            .any(|(name, _)| name.starts_with("wasi:")),
        "expected WASI imports: {:?}",
        report.imports
    );

    let params = "patience=1,min_delta=100";
    let dir = tempfile::tempdir().unwrap();
    let runs: Vec<_> = [
        format!("{}:{params}", wasm.display()),
        format!("early-stopping:{params}"),
    ]
    .iter()
    .enumerate()
    .map(|(i, spec)| {
        let run = dir.path().join(format!("r{i}"));
        let summary = run_wasi_guest(spec, &run, 6, Limits::default());
        (
            summary.outcome,
            summary.epochs_completed,
            weights(&run, "last"),
        )
    })
    .collect();
    assert_eq!(runs[0].0, RunOutcome::Stopped);
    assert_eq!(runs[0], runs[1]);
    assert!(fault_kinds(&dir.path().join("r0")).is_empty());
}

/// A Rust panic prints its message to stderr and aborts: a `trap` fault whose record carries the
/// panic message, the callback is restarted then disabled, and training goes on untouched.
#[test]
fn a_rust_panic_is_a_trap_fault_that_keeps_its_message() {
    let wasm = wasip2_guest("hostile-guest");
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let summary = run_wasi_guest(
        &format!("{}:mode=panic", wasm.display()),
        &run,
        2,
        Limits::default(),
    );
    assert_eq!(summary.outcome, RunOutcome::Completed);
    let faults = jsonl(&run, "faults.jsonl");
    assert!(!faults.is_empty());
    for f in &faults {
        assert_eq!(f["kind"], "trap", "{f}");
        let message = f["message"].as_str().unwrap();
        assert!(
            message.contains("unreachable") && message.contains("hostile guest panics at epoch"),
            "{message}"
        );
        assert!(
            !message.contains("wasm function"),
            "no raw backtrace: {message}"
        );
    }
    assert!(
        jsonl(&run, "log.jsonl")
            .iter()
            .any(|l| l["message"].as_str().unwrap().contains("panicked at")),
        "the panic message is in log.jsonl"
    );
    assert_weights_untouched(&run, dir.path());
}

/// 64 MiB written to stdout in one call is cut to the output budget and counted; the flood is not
/// a fault, the host never holds more than one call's budget, and training is untouched.
#[test]
fn a_stdout_flood_is_cut_to_the_budget() {
    let wasm = wasip2_guest("hostile-guest");
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    // A generous deadline: the flood must be cut by the output budget, not by the clock.
    let limits = Limits {
        call_timeout: Duration::from_secs(30),
        fuel_per_call: u64::MAX / 4,
        ..Limits::default()
    };
    let outcome = run_wasi_guest(
        &format!("{}:mode=stdout-flood", wasm.display()),
        &run,
        2,
        limits,
    )
    .outcome;
    assert_eq!(outcome, RunOutcome::Completed);
    let dropped = assert_output_cut_without_a_fault(&run);
    assert!(dropped > (2 * 60) << 20, "dropped only {dropped} bytes");
    assert_weights_untouched(&run, dir.path());
}

/// What a WASI guest prints becomes log lines: stdout at `info`, stderr at `warn`.
#[test]
fn wasi_stdout_and_stderr_become_log_lines() {
    let wasm = wasip2_guest("hostile-guest");
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    run_wasi_guest(
        &format!("{}:mode=honest", wasm.display()),
        &run,
        2,
        Limits::default(),
    );
    let lines: Vec<(String, String)> = jsonl(&run, "log.jsonl")
        .iter()
        .map(|l| {
            (
                l["level"].as_str().unwrap().to_string(),
                l["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for epoch in 0..2 {
        for (level, stream) in [("info", "stdout"), ("warn", "stderr")] {
            let want = (
                level.to_string(),
                format!("hostile-guest: epoch {epoch} on {stream}"),
            );
            assert!(lines.contains(&want), "{want:?} not in {lines:?}");
        }
    }
}
