//! Sandbox limits and fault policy: a faulting callback is contained, recorded with the right
//! kind, and — having issued no valid decision — leaves the weights bitwise untouched.

use std::path::Path;
use std::time::Duration;
use trainrt::trainer::RunOutcome;

use crate::common::{
    WatGuest, componentize, jsonl, kind, quick_config, sandbox, summary, train, weights,
};
use trainrt::callback::CallbackError;
use trainrt::callback::{CallbackOptions, FaultPolicy};
use trainrt::config::TrainConfig;
use trainrt::host::CallbackHost;
use trainrt::sandbox::Limits;

/// Runs 2 epochs with `guest` (hooked into epoch-end) and returns the run directory.
fn run_with(
    guest: WatGuest,
    dir: &Path,
    policy: FaultPolicy,
    limits: Limits,
) -> std::path::PathBuf {
    let path = guest.write(dir, "hostile");
    let run = dir.join("run");
    let mut config: TrainConfig = quick_config(2);
    config.push_callback(path.to_str().unwrap()).unwrap();
    config.callbacks[0].on_fault = policy;
    config.callbacks[0].limits = limits;
    train(config, &run);
    run
}

fn baseline(dir: &Path) -> std::path::PathBuf {
    let run = dir.join("baseline");
    train(quick_config(2), &run);
    run
}

/// Asserts the final weights of `run` are bitwise those of the same 2-epoch run without callbacks.
pub(crate) fn assert_weights_untouched(run: &Path, dir: &Path) {
    assert_eq!(
        weights(run, "last"),
        weights(&baseline(dir), "last"),
        "a guest that made no valid decision changed the weights"
    );
}

/// Asserts that `run` recorded no fault and kept at most two calls' worth of callback output;
/// returns how many bytes of output it dropped.
pub(crate) fn assert_output_cut_without_a_fault(run: &Path) -> u64 {
    assert!(
        fault_kinds(run).is_empty(),
        "{:?}",
        jsonl(run, "faults.jsonl")
    );
    let kept: usize = jsonl(run, "log.jsonl")
        .iter()
        .map(|l| l["message"].as_str().unwrap().len())
        .sum();
    assert!(
        kept <= 2 * Limits::default().log_bytes_per_call + 16,
        "kept {kept} bytes"
    );
    summary(run)["callbacks"][0]["dropped_log_bytes"]
        .as_u64()
        .unwrap()
}

pub(crate) fn fault_kinds(run: &Path) -> Vec<String> {
    jsonl(run, "faults.jsonl")
        .iter()
        .map(|f| f["kind"].as_str().unwrap().to_string())
        .collect()
}

fn hostile(body: &str) -> WatGuest {
    WatGuest::new(&[kind::EPOCH_END]).body("on-epoch-end", body)
}

#[test]
fn an_infinite_loop_times_out() {
    let dir = tempfile::tempdir().unwrap();
    // Fuel high enough that the wall-clock deadline is what stops it.
    let limits = Limits {
        call_timeout: Duration::from_millis(20),
        fuel_per_call: u64::MAX / 4,
        ..Limits::default()
    };
    let run = run_with(
        hostile("(loop $l (br $l))"),
        dir.path(),
        FaultPolicy::Disable,
        limits,
    );
    assert_eq!(fault_kinds(&run), vec!["timeout"]);
    assert_eq!(summary(&run)["callbacks"][0]["status"], "disabled");
    assert_eq!(summary(&run)["outcome"], "completed");
    assert_weights_untouched(&run, dir.path());
}

#[test]
fn fuel_bounds_a_call_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        fuel_per_call: 100_000,
        call_timeout: Duration::from_secs(10),
        ..Limits::default()
    };
    let run = run_with(
        hostile("(loop $l (br $l))"),
        dir.path(),
        FaultPolicy::Disable,
        limits,
    );
    assert_eq!(fault_kinds(&run), vec!["out-of-fuel"]);
}

#[test]
fn memory_growth_past_the_cap_is_a_memory_limit_fault() {
    let dir = tempfile::tempdir().unwrap();
    // 4 GiB in one step, then the same in small steps.
    let one_step = hostile("(drop (memory.grow (i32.const 65535)))");
    let run = run_with(
        one_step,
        dir.path(),
        FaultPolicy::Disable,
        Limits::default(),
    );
    assert_eq!(fault_kinds(&run), vec!["memory-limit"]);
    assert_weights_untouched(&run, dir.path());
    let dir = tempfile::tempdir().unwrap();
    let many = hostile("(loop $l (drop (memory.grow (i32.const 1))) (br $l))");
    let run = run_with(many, dir.path(), FaultPolicy::Disable, Limits::default());
    assert_eq!(fault_kinds(&run), vec!["memory-limit"]);
    assert_weights_untouched(&run, dir.path());
}

#[test]
fn infinite_recursion_is_a_stack_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let guest = hostile("(call $recurse)").extra("(func $recurse (call $recurse))");
    let run = run_with(guest, dir.path(), FaultPolicy::Disable, Limits::default());
    assert_eq!(fault_kinds(&run), vec!["stack-overflow"]);
    assert_weights_untouched(&run, dir.path());
}

#[test]
fn unreachable_traps_and_restart_brings_the_callback_back_until_the_budget_is_spent() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let path = hostile("unreachable").write(dir.path(), "trapper");
    let mut config = quick_config(6);
    config.push_callback(path.to_str().unwrap()).unwrap();
    config.callbacks[0].max_restarts = 2;
    let result = train(config, &run);
    assert_eq!(result.outcome, RunOutcome::Completed);
    let faults = jsonl(&run, "faults.jsonl");
    let actions: Vec<&str> = faults
        .iter()
        .map(|f| f["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, vec!["restarted", "restarted", "disabled"]);
    assert!(
        faults
            .iter()
            .all(|f| f["kind"] == "trap" && f["during"] == "epoch-end")
    );
    let s = summary(&run);
    assert_eq!(s["callbacks"][0]["restarts"], 2);
    assert_eq!(s["callbacks"][0]["faults"]["trap"], 3);
    assert_eq!(s["callbacks"][0]["status"], "disabled");
}

#[test]
fn a_critical_callback_that_faults_fails_the_run_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_with(
        hostile("unreachable"),
        dir.path(),
        FaultPolicy::Abort,
        Limits::default(),
    );
    let s = summary(&run);
    assert_eq!(s["outcome"], "failed");
    let reason = s["reason"].as_str().unwrap();
    assert!(
        reason.contains("hostile") && reason.contains("trap"),
        "{reason}"
    );
    assert_eq!(s["epochs_completed"], 1);
    assert!(run.join("checkpoints/last.safetensors").is_file());
    trainrt::checkpoint::load(&run.join("checkpoints/last.safetensors")).unwrap();
}

#[test]
fn other_callbacks_hear_about_a_fault() {
    let dir = tempfile::tempdir().unwrap();
    let bad = hostile("unreachable").write(dir.path(), "bad");
    let run = dir.path().join("run");
    let mut config = quick_config(1);
    config.push_callback(bad.to_str().unwrap()).unwrap();
    config.push_callback("logger").unwrap();
    train(config, &run);
    let events = jsonl(&run, "events.jsonl");
    let fault = events
        .iter()
        .find(|e| e["event"] == "fault")
        .expect("fault event delivered");
    assert_eq!(fault["kind"], "callback-fault");
    assert!(fault["message"].as_str().unwrap().contains("bad"));
}

#[test]
fn log_floods_are_cut_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    // Logs a 60000-byte message 1000 times per call.
    let guest = hostile(
        "(memory.fill (i32.const 4096) (i32.const 97) (i32.const 60000)) (local.set 0 (i32.const 1000)) (loop $l (call $log (i32.const 1) (i32.const 4096) (i32.const 60000)) (local.set 0 (i32.sub (local.get 0) (i32.const 1))) (br_if $l (local.get 0)))",
    );
    // A generous deadline: this test is about output bounds, not time, and must not flake on a
    // loaded machine.
    let limits = Limits {
        call_timeout: Duration::from_secs(10),
        fuel_per_call: u64::MAX / 4,
        ..Limits::default()
    };
    let run = run_with(guest, dir.path(), FaultPolicy::Disable, limits);
    assert!(assert_output_cut_without_a_fault(&run) > 1_000_000);
    assert_weights_untouched(&run, dir.path());
}

#[test]
fn a_million_decisions_is_an_invalid_decision_fault() {
    let dir = tempfile::tempdir().unwrap();
    // Grow memory to hold 1,000,000 zeroed 24-byte decisions (each a stop-training with an empty
    // reason) and return them all: a well-formed list, just far too long.
    let guest = hostile(
        "(drop (memory.grow (i32.const 400))) (i32.store (i32.const 16) (i32.const 65536)) \
         (i32.store (i32.const 20) (i32.const 1000000)) (return (i32.const 16))",
    );
    let limits = Limits {
        call_timeout: Duration::from_secs(10),
        ..Limits::default()
    };
    let run = run_with(guest, dir.path(), FaultPolicy::Disable, limits);
    assert_eq!(fault_kinds(&run), vec!["invalid-decision"]);
    assert_eq!(
        summary(&run)["outcome"],
        "completed",
        "none of the stops applied"
    );
    assert_weights_untouched(&run, dir.path());
}

#[test]
fn a_giant_state_snapshot_is_invalid_output() {
    let dir = tempfile::tempdir().unwrap();
    let guest = WatGuest::new(&[kind::EPOCH_END]).body(
        "snapshot-state",
        "(drop (memory.grow (i32.const 40))) (i32.store (i32.const 16) (i32.const 65536)) \
         (i32.store (i32.const 20) (i32.const 2000000)) (return (i32.const 16))",
    );
    let run = run_with(guest, dir.path(), FaultPolicy::Disable, Limits::default());
    let faults = jsonl(&run, "faults.jsonl");
    assert_eq!(faults.len(), 1);
    assert_eq!(faults[0]["kind"], "invalid-output");
    assert_eq!(faults[0]["during"], "snapshot-state");
    // The checkpoint was still written, without that callback's state.
    let ckpt = trainrt::checkpoint::load(&run.join("checkpoints/last.safetensors")).unwrap();
    assert!(ckpt.meta.callback_states.is_empty());
    assert_weights_untouched(&run, dir.path());
}

#[test]
fn a_restore_state_that_traps_on_resume_is_contained() {
    let dir = tempfile::tempdir().unwrap();
    let path = WatGuest::new(&[kind::EPOCH_END])
        .body("snapshot-state", "(i32.store (i32.const 16) (i32.const 64)) (i32.store (i32.const 20) (i32.const 1)) (return (i32.const 16))")
        .body("restore-state", "unreachable")
        .write(dir.path(), "fragile");
    let run = dir.path().join("run");
    let mut config = quick_config(1);
    config.push_callback(path.to_str().unwrap()).unwrap();
    config.callbacks[0].on_fault = FaultPolicy::Disable;
    train(config.clone(), &run);
    config.epochs = 2;
    let resumed = trainrt::train(
        sandbox(),
        trainrt::RunRequest {
            config,
            run_dir: run.clone(),
            resume: true,
        },
        &mut trainrt::trainer::Quiet,
    )
    .unwrap();
    assert_eq!(resumed.outcome, RunOutcome::Completed);
    let faults = jsonl(&run, "faults.jsonl");
    assert_eq!(faults.len(), 1);
    assert_eq!(
        (faults[0]["kind"].as_str(), faults[0]["during"].as_str()),
        (Some("trap"), Some("restore-state"))
    );
    // One epoch, then a resume to two, ends where two straight epochs without it end.
    assert_weights_untouched(&run, dir.path());
}

#[test]
fn a_log_line_that_is_not_utf8_is_invalid_output() {
    let dir = tempfile::tempdir().unwrap();
    let guest = hostile(
        "(i32.store (i32.const 300) (i32.const 0xffffffff)) (call $log (i32.const 1) (i32.const 300) (i32.const 4))",
    );
    let run = run_with(guest, dir.path(), FaultPolicy::Disable, Limits::default());
    assert_eq!(fault_kinds(&run), vec!["invalid-output"]);
    let message = jsonl(&run, "faults.jsonl")[0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("utf-8") && !message.contains('\n'),
        "{message}"
    );
    assert_weights_untouched(&run, dir.path());
}

#[test]
fn init_that_rejects_its_config_or_loops_is_a_clear_start_error() {
    let reject = WatGuest::new(&[]).body(
        "init",
        "(i32.store8 (i32.const 0) (i32.const 1)) (i32.store (i32.const 4) (i32.const 64)) (i32.store (i32.const 8) (i32.const 0)) (return (i32.const 0))",
    );
    let dir = tempfile::tempdir().unwrap();
    let path = reject.write(dir.path(), "picky");
    let options = vec![CallbackOptions::new(
        format!("{}:x=1", path.display()).parse().unwrap(),
    )];
    match CallbackHost::start(sandbox(), &options) {
        Err(CallbackError::Rejected { name, .. }) => assert_eq!(name, "picky"),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("init rejection accepted"),
    }
    let looping = WatGuest::new(&[])
        .body("init", "(loop $l (br $l))")
        .write(dir.path(), "spinner");
    let mut opts = CallbackOptions::new(looping.to_str().unwrap().parse().unwrap());
    opts.limits.fuel_per_call = u64::MAX / 4;
    opts.limits.init_timeout = Duration::from_millis(20);
    let err = CallbackHost::start(sandbox(), &[opts])
        .err()
        .expect("looping init fails")
        .to_string();
    assert!(
        err.contains("spinner") && err.contains("init") && err.contains("timeout"),
        "{err}"
    );
}

/// A valid component for some other world (it exports `run`, not the callback interface) is
/// rejected at load with a message naming what is missing.
#[test]
fn a_component_for_another_world_is_rejected() {
    let mut resolve = wit_parser::Resolve::default();
    let pkg = resolve
        .push_str(
            "other.wit",
            "package other:thing;\nworld tool { export run: func(); }\n",
        )
        .unwrap();
    let world = resolve.select_world(&[pkg], Some("tool")).unwrap();
    let component = componentize(r#"(module (func (export "run")))"#, &resolve, world);
    let err = trainrt::CompiledCallback::new(&sandbox(), "tool", &component)
        .err()
        .expect("rejected")
        .to_string();
    assert!(
        err.contains("does not export the callback interface")
            && err.contains("trainrt:callbacks/callback"),
        "{err}"
    );
}

/// The deadline is a deadline, not a suggestion: a loop that takes four times the call timeout is
/// cut off, and the same loop under a timeout ten times its length is not. The loop's length is
/// measured first, so the test holds on fast and slow machines alike. (The margin is wide because
/// tests run in parallel on small machines: a loop measured while other tests load the CPU can
/// run much faster later, and the epoch ticker is a thread that can be scheduled late. A margin
/// of 1.4 flaked on a 2-core machine; the timeout's precision is not what this test is about.)
#[test]
fn a_loop_four_times_the_deadline_times_out_and_one_well_under_does_not() {
    use trainrt::callback::{CallbackInstance, CompiledCallback};
    use trainrt::contract::EpochMetrics;
    use trainrt::events::Event;
    use trainrt::sandbox::CallbackFaultKind as FaultKind;

    // About 2^25 iterations of a countdown: tens of milliseconds.
    let guest = hostile(
        "(global.set $n (i32.const 33554432)) \
         (loop $l (global.set $n (i32.sub (global.get $n) (i32.const 1))) \
           (br_if $l (i32.ne (global.get $n) (i32.const 0))))",
    )
    .extra("(global $n (mut i32) (i32.const 0))");
    let bytes = guest.component();
    let compiled =
        std::sync::Arc::new(CompiledCallback::new(&sandbox(), "spinner", &bytes).unwrap());
    let event = Event::EpochEnd(EpochMetrics {
        epoch: 0,
        step: 1,
        values: vec![],
    });
    let run = |timeout: Duration| {
        let limits = Limits {
            call_timeout: timeout,
            fuel_per_call: u64::MAX / 4,
            ..Limits::default()
        };
        let mut instance =
            CallbackInstance::start(&sandbox(), compiled.clone(), &[], &limits).unwrap();
        let t = std::time::Instant::now();
        let result = instance.deliver(&sandbox(), &event);
        (result, t.elapsed())
    };
    // The fastest of three unhindered runs is the loop's length.
    let length = (0..3)
        .map(|_| {
            let (result, took) = run(Duration::from_secs(60));
            result.expect("no deadline in sight");
            took
        })
        .min()
        .unwrap();
    let deadline = length / 4;
    let (cut, _) = run(deadline);
    assert_eq!(
        cut.err().map(|f| f.kind),
        Some(FaultKind::Timeout),
        "a loop of {length:?} under a deadline of {deadline:?}"
    );
    let (whole, _) = run(length * 10);
    whole.expect("a deadline ten times the loop's length lets it finish");
}

/// A component importing an interface the sandbox does not offer is refused at load, naming the
/// import, before anything runs.
#[test]
fn an_unknown_import_is_refused_naming_it() {
    let mut resolve = wit_parser::Resolve::default();
    let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
    resolve.push_path(&wit).unwrap();
    let pkg = resolve
        .push_str(
            "evil.wit",
            "package evil:host;\n\
             interface escape { run: func(); }\n\
             world hostile { include trainrt:callbacks/callback-world@0.1.0; import escape; }\n",
        )
        .unwrap();
    let world = resolve.select_world(&[pkg], Some("hostile")).unwrap();
    let wat = hostile("(call $escape)").wat().replacen(
        "(module\n",
        "(module\n  (import \"evil:host/escape\" \"run\" (func $escape))\n",
        1,
    );
    let component = componentize(&wat, &resolve, world);
    let err = trainrt::CompiledCallback::new(&sandbox(), "escaper", &component)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("evil:host/escape") && err.contains("does not grant"),
        "{err}"
    );
}
