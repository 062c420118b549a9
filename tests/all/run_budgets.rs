//! Bounded cost per run: a callback that stays inside every per-call limit still cannot make a
//! run slow, its directory huge, or its summary wrong. Each class of cost is stopped by its
//! budget (set small here, so the tests are fast), the callback faults with kind `budget` (or
//! `out-of-fuel` for host work within one call) and is disabled, and the run's files agree.

use std::path::{Path, PathBuf};
use std::time::Duration;

use trainrt::callback::{CallbackError, CallbackOptions, FaultPolicy};
use trainrt::host::CallbackHost;
use trainrt::sandbox::{CallbackFaultKind, Limits};

use crate::common::{
    Decision, WatGuest, deciding_guest, jsonl, kind, quick_config, sandbox, summary, train, weights,
};

/// Trains `epochs` epochs with `guest` under `limits` (disabled on a fault) into `dir/run`.
fn run(guest: &WatGuest, dir: &Path, epochs: u32, limits: Limits) -> PathBuf {
    let path = guest.write(dir, "spender");
    let run = dir.join("run");
    let mut config = quick_config(epochs);
    config.push_callback(path.to_str().unwrap()).unwrap();
    config.callbacks[0].on_fault = FaultPolicy::Disable;
    config.callbacks[0].limits = limits;
    train(config, &run);
    run
}

/// The run's one fault: asserts there is exactly one, of `kind`, and returns its message.
fn the_fault(run: &Path, kind: &str) -> String {
    let faults = jsonl(run, "faults.jsonl");
    assert_eq!(faults.len(), 1, "{faults:?}");
    assert_eq!(faults[0]["kind"], kind, "{faults:?}");
    assert_eq!(faults[0]["action"], "disabled");
    let s = summary(run);
    assert_eq!(
        s["outcome"], "completed",
        "a budget fault never fails the run"
    );
    assert_eq!(s["callbacks"][0]["status"], "disabled");
    assert_eq!(s["callbacks"][0]["faults"][kind], 1);
    faults[0]["message"].as_str().unwrap().to_string()
}

/// What became of each of the callback's decisions, in order.
fn statuses(run: &Path) -> Vec<String> {
    jsonl(run, "decisions.jsonl")
        .iter()
        .map(|d| d["status"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn output_the_host_takes_in_costs_the_guest_fuel() {
    let dir = tempfile::tempdir().unwrap();
    // 56,000 bytes (zeros, past the heap) logged in one call, against 50,000 fuel per call: the
    // guest's own instructions are a handful, the host's copying is the rest.
    let guest = WatGuest::new(&[kind::EPOCH_END]).body(
        "on-epoch-end",
        "(call $log (i32.const 1) (i32.const 8192) (i32.const 56000))",
    );
    let limits = Limits {
        fuel_per_call: 50_000,
        ..Limits::default()
    };
    let message = the_fault(&run(&guest, dir.path(), 2, limits), "out-of-fuel");
    assert!(
        message.contains("56000 bytes of output"),
        "the fault says the host's work was the cost: {message}"
    );
}

#[test]
fn fuel_over_the_run_is_a_budget_even_when_every_call_is_within_its_own() {
    let dir = tempfile::tempdir().unwrap();
    // About 100,000 instructions per batch, far under the per-call fuel, forever.
    let guest = WatGuest::new(&[kind::BATCH_END]).body(
        "on-batch-end",
        "(local.set 0 (i32.const 20000)) \
         (loop $l (local.set 0 (i32.sub (local.get 0) (i32.const 1))) (br_if $l (local.get 0)))",
    );
    let limits = Limits {
        fuel_per_run: 1_000_000,
        ..Limits::default()
    };
    let run = run(&guest, dir.path(), 2, limits);
    let message = the_fault(&run, "budget");
    assert!(message.contains("limits.fuel_per_run"), "{message}");
    let s = summary(&run);
    let (calls, fuel) = (&s["callbacks"][0]["calls"], &s["callbacks"][0]["fuel_used"]);
    assert!(
        calls.as_u64().unwrap() < 20,
        "stopped within the budget: {calls} calls"
    );
    assert!(fuel.as_u64().unwrap() <= 1_200_000, "{fuel} fuel");
}

#[test]
fn time_over_its_share_of_the_run_is_a_budget() {
    let dir = tempfile::tempdir().unwrap();
    // Milliseconds of work on every batch, against a training step of about a tenth of that.
    let guest = WatGuest::new(&[kind::BATCH_END]).body(
        "on-batch-end",
        "(local.set 0 (i32.const 2000000)) \
         (loop $l (local.set 0 (i32.sub (local.get 0) (i32.const 1))) (br_if $l (local.get 0)))",
    );
    let limits = Limits {
        time_share: 0.05,
        time_grace: Duration::from_millis(20),
        call_timeout: Duration::from_secs(5),
        ..Limits::default()
    };
    let message = the_fault(&run(&guest, dir.path(), 2, limits), "budget");
    assert!(message.contains("% of the run"), "{message}");
}

#[test]
fn decisions_over_the_run_are_a_budget() {
    let dir = tempfile::tempdir().unwrap();
    let guest = deciding_guest(
        &[kind::BATCH_END],
        "on-batch-end",
        &[Decision::Metric("x", 1.0)],
    );
    let limits = Limits {
        decisions_per_run: 5,
        ..Limits::default()
    };
    let run = run(&guest, dir.path(), 1, limits);
    the_fault(&run, "budget");
    // The call that went over had its decisions dropped with it.
    assert_eq!(statuses(&run), ["applied"; 5]);
}

#[test]
fn new_checkpoint_tags_past_the_budget_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let guest = deciding_guest(
        &[kind::EPOCH_END],
        "on-epoch-end",
        &[
            Decision::Save("a"),
            Decision::Save("b"),
            Decision::Save("c"),
        ],
    );
    let limits = Limits {
        checkpoint_tags: 2,
        ..Limits::default()
    };
    let run = run(&guest, dir.path(), 2, limits);
    let message = the_fault(&run, "budget");
    assert!(message.contains("'c'"), "{message}");
    assert_eq!(statuses(&run), ["applied", "applied", "rejected"]);
    let reason = &jsonl(&run, "decisions.jsonl")[2]["reason"];
    assert!(
        reason.as_str().unwrap().starts_with("over budget"),
        "{reason}"
    );
    let mut files: Vec<String> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["a.safetensors", "b.safetensors", "last.safetensors"]
    );
}

#[test]
fn checkpoint_saves_per_epoch_past_the_budget_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let guest = deciding_guest(&[kind::BATCH_END], "on-batch-end", &[Decision::Save("a")]);
    let limits = Limits {
        checkpoint_saves_per_epoch: 2,
        ..Limits::default()
    };
    let run = run(&guest, dir.path(), 1, limits);
    let message = the_fault(&run, "budget");
    assert!(
        message.contains("limits.checkpoint_saves_per_epoch"),
        "{message}"
    );
    assert_eq!(statuses(&run), ["applied", "applied", "rejected"]);
}

#[test]
fn checkpoint_bytes_past_the_budget_end_the_saving() {
    let dir = tempfile::tempdir().unwrap();
    let guest = deciding_guest(&[kind::EPOCH_END], "on-epoch-end", &[Decision::Save("a")]);
    let limits = Limits {
        checkpoint_bytes_per_run: 1000,
        ..Limits::default()
    };
    let run = run(&guest, dir.path(), 3, limits);
    let message = the_fault(&run, "budget");
    assert!(
        message.contains("limits.checkpoint_bytes_per_run"),
        "{message}"
    );
    // The save that crossed the budget stands; the callback asked for no more after it.
    assert_eq!(statuses(&run), ["applied"]);
    assert!(run.join("checkpoints/a.safetensors").exists());
}

#[test]
fn metric_names_past_the_budget_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let guest = deciding_guest(
        &[kind::EPOCH_END],
        "on-epoch-end",
        &[Decision::Metric("m1", 1.0), Decision::Metric("m2", 2.0)],
    );
    let limits = Limits {
        metric_names: 1,
        ..Limits::default()
    };
    let run = run(&guest, dir.path(), 2, limits);
    the_fault(&run, "budget");
    let metrics = jsonl(&run, "metrics.jsonl");
    assert_eq!(metrics[0]["m1"], 1.0);
    assert!(metrics[0].get("m2").is_none(), "{}", metrics[0]);
    assert!(metrics[1].get("m1").is_none(), "disabled after epoch 0");
}

#[test]
fn validations_per_epoch_past_the_budget_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let guest = deciding_guest(&[kind::BATCH_END], "on-batch-end", &[Decision::ValidateNow]);
    let limits = Limits {
        validations_per_epoch: 2,
        ..Limits::default()
    };
    let run = run(&guest, dir.path(), 1, limits);
    the_fault(&run, "budget");
    assert_eq!(statuses(&run), ["applied", "applied", "rejected"]);
}

#[test]
fn restores_per_epoch_past_the_budget_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // `last` exists from the end of epoch 0 on; epoch 1 asks to restore it on every batch.
    let guest = deciding_guest(
        &[kind::BATCH_END],
        "on-batch-end",
        &[Decision::Restore("last")],
    );
    let limits = Limits {
        restores_per_epoch: 1,
        ..Limits::default()
    };
    let run = run(&guest, dir.path(), 2, limits);
    the_fault(&run, "budget");
    let decisions = jsonl(&run, "decisions.jsonl");
    let applied: Vec<&serde_json::Value> = decisions
        .iter()
        .filter(|d| d["status"] == "applied")
        .collect();
    assert_eq!(applied.len(), 1, "one restore in epoch 1");
    assert_eq!(applied[0]["epoch"], 1);
    let last = decisions.last().unwrap();
    assert!(
        last["reason"].as_str().unwrap().starts_with("over budget"),
        "{last}"
    );
}

#[test]
fn a_run_that_ends_on_restored_weights_says_so_and_validates_them() {
    let dir = tempfile::tempdir().unwrap();
    // At train-end, `last` holds the weights after epoch 2 of 3 (the final `last` is written
    // after train-end); restoring it makes those the run's final weights.
    let guest = deciding_guest(
        &[kind::TRAIN_END],
        "on-train-end",
        &[Decision::Restore("last")],
    );
    let run = run(&guest, dir.path(), 3, Limits::default());
    let two_epochs = dir.path().join("two");
    train(quick_config(2), &two_epochs);
    assert_eq!(weights(&run, "last"), weights(&two_epochs, "last"));

    let s = summary(&run);
    assert_eq!(
        (s["outcome"].as_str(), s["epochs_completed"].as_u64()),
        (Some("completed"), Some(3))
    );
    let fw = &s["final_weights"];
    assert_eq!(fw["tag"], "last");
    assert_eq!(fw["by"], "spender");
    assert_eq!(fw["epochs_completed"], 2);
    // Validated again: the figures of the weights the run ends with, not of epoch 3.
    let two = summary(&two_epochs);
    assert_eq!(fw["val_loss"], two["final_metrics"]["val_loss"]);
    assert_eq!(fw["val_accuracy"], two["final_metrics"]["val_accuracy"]);
    assert_ne!(fw["val_loss"], s["final_metrics"]["val_loss"]);
    // A run that trains after its last restore has nothing to say.
    let plain = dir.path().join("plain");
    train(quick_config(1), &plain);
    assert!(summary(&plain).get("final_weights").is_none());
}

#[test]
fn every_fault_is_in_faults_jsonl_exactly_once_including_the_final_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let guest = WatGuest::new(&[kind::EPOCH_END]).body("snapshot-state", "unreachable");
    let path = guest.write(dir.path(), "fragile");
    let run = dir.path().join("run");
    let mut config = quick_config(2);
    config.push_callback(path.to_str().unwrap()).unwrap();
    config.callbacks[0].max_restarts = 10;
    let result = train(config, &run);
    let faults = jsonl(&run, "faults.jsonl");
    let counted: u32 = result.callbacks[0].faults.values().sum();
    assert_eq!(faults.len() as u32, counted, "{faults:?}");
    assert_eq!(summary(&run)["callbacks"][0]["faults"]["trap"], counted);
    // The last one is the final checkpoint's, after train-end.
    let last = faults.last().unwrap();
    assert_eq!(last["during"], "snapshot-state");
    assert_eq!(last["step"], result.steps);
}

#[test]
fn a_table_past_the_cap_is_a_memory_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = WatGuest::new(&[kind::EPOCH_END])
        .extra("(table 1000000 funcref)")
        .write(dir.path(), "tables");
    let options = CallbackOptions::new(path.to_str().unwrap().parse().unwrap());
    let err = CallbackHost::start(sandbox(), &[options])
        .err()
        .expect("a million-entry table is refused");
    match err {
        CallbackError::StartFault { fault, .. } => {
            assert_eq!(fault.kind, CallbackFaultKind::MemoryLimit, "{fault}");
            assert!(fault.message.contains("table limit"), "{fault}");
        }
        other => panic!("expected a start fault, got {other}"),
    }
}

/// Writes one hostile guest per class of cost into `$TRAINRT_BENCH_DIR` (default: the target's
/// tmp dir), for `scripts/bench-budgets.sh`, which runs each against the default limits with the
/// release binary and reports what it costs a run (BENCHMARKS.md):
/// `cargo test -p trainrt --test all run_budgets::write_benchmark_guests -- --ignored --nocapture`
#[test]
#[ignore = "writes benchmark inputs; run by scripts/bench-budgets.sh"]
fn write_benchmark_guests() {
    let dir = std::env::var_os("TRAINRT_BENCH_DIR").map_or_else(
        || Path::new(env!("CARGO_TARGET_TMPDIR")).join("budgets"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&dir).unwrap();
    let burn = |iterations: u32| {
        format!(
            "(local.set 0 (i32.const {iterations})) \
             (loop $l (local.set 0 (i32.sub (local.get 0) (i32.const 1))) (br_if $l (local.get 0)))"
        )
    };
    let tags: Vec<String> = (0..64).map(|i| format!("t{i}")).collect();
    let names = |prefix: &str| -> Vec<String> { (0..64).map(|i| format!("{prefix}{i}")).collect() };
    let (first, second) = (names("a"), names("b"));
    let guests: Vec<(&str, WatGuest)> = vec![
        // Ten 4 MiB log messages on every batch: 40 MiB of copying per call for the host.
        (
            "host-work",
            WatGuest::new(&[kind::BATCH_END]).body(
                "on-batch-end",
                "(if (i32.lt_u (memory.size) (i32.const 65)) \
                   (then (drop (memory.grow (i32.const 64))))) \
                 (memory.fill (i32.const 65536) (i32.const 97) (i32.const 4194304)) \
                 (local.set 0 (i32.const 10)) \
                 (loop $l (call $log (i32.const 1) (i32.const 65536) (i32.const 4194304)) \
                   (local.set 0 (i32.sub (local.get 0) (i32.const 1))) (br_if $l (local.get 0)))",
            ),
        ),
        // About 90% of the per-call fuel on every batch (six instructions an iteration).
        (
            "fuel-just-under",
            WatGuest::new(&[kind::BATCH_END]).body("on-batch-end", &burn(7_400_000)),
        ),
        (
            "new-tags",
            deciding_guest(
                &[kind::BATCH_END],
                "on-batch-end",
                &tags.iter().map(|t| Decision::Save(t)).collect::<Vec<_>>(),
            ),
        ),
        (
            "save-every-batch",
            deciding_guest(&[kind::BATCH_END], "on-batch-end", &[Decision::Save("a")]),
        ),
        (
            "validate-every-batch",
            deciding_guest(&[kind::BATCH_END], "on-batch-end", &[Decision::ValidateNow]),
        ),
        (
            "restore-every-batch",
            deciding_guest(
                &[kind::BATCH_END],
                "on-batch-end",
                &[Decision::Restore("last")],
            ),
        ),
        (
            "decisions-every-batch",
            deciding_guest(
                &[kind::BATCH_END],
                "on-batch-end",
                &first
                    .iter()
                    .map(|n| Decision::Metric(n, 1.0))
                    .collect::<Vec<_>>(),
            ),
        ),
    ];
    for (name, guest) in &guests {
        println!("{}", guest.write(&dir, name).display());
    }
    // 128 metric names: 64 at batch-end, 64 others at batch-start (placed clear of the bump
    // heap at 4096, which init's config list starts).
    let (table, strings) = crate::common::encode_decisions(
        &second
            .iter()
            .map(|n| Decision::Metric(n, 1.0))
            .collect::<Vec<_>>(),
        51200,
    );
    let metric_names = deciding_guest(
        &[kind::BATCH_START, kind::BATCH_END],
        "on-batch-end",
        &first
            .iter()
            .map(|n| Decision::Metric(n, 1.0))
            .collect::<Vec<_>>(),
    )
    .data(49152, &table)
    .data(51200, &strings)
    .body(
        "on-batch-start",
        "(i32.store (i32.const 16) (i32.const 49152)) (i32.store (i32.const 20) (i32.const 64)) \
         (return (i32.const 16))",
    );
    println!("{}", metric_names.write(&dir, "new-metric-names").display());
}
