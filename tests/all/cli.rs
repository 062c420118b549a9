//! The `trainrt` command line: the happy paths a user follows, and every usage error prints a
//! clear `trainrt: ...` message and exits 2.

use std::path::Path;
use std::process::Output;

use crate::common::{WatGuest, kind, stderr_of as stderr};

fn trainrt(args: &[&str], cwd: &Path) -> Output {
    crate::common::run_trainrt(args, cwd, &[])
}

/// Asserts exit code 2 and that stderr mentions every fragment.
fn usage_error(args: &[&str], cwd: &Path, fragments: &[&str]) {
    let out = trainrt(args, cwd);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{args:?} should be a usage error; stderr: {err}"
    );
    for f in fragments {
        assert!(err.contains(f), "{args:?}: stderr lacks {f:?}: {err}");
    }
}

#[test]
fn usage_errors_say_what_is_wrong_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    usage_error(
        &["run", "--epochs", "0"],
        d,
        &["trainrt: invalid epochs", "at least 1"],
    );
    usage_error(&["run", "--lr", "-1"], d, &["invalid lr"]);
    usage_error(
        &["run", "--callback", "nope"],
        d,
        &["neither a bundled callback", "early-stopping"],
    );
    usage_error(
        &["run", "--callback", "early-stopping:patiense=3"],
        d,
        &["early-stopping", "patiense"],
    );
    usage_error(
        &["run", "--callback", "early-stopping:patience=abc"],
        d,
        &["patience"],
    );
    usage_error(
        &["run", "--callback", "logger:verbose"],
        d,
        &["not key=value"],
    );
    usage_error(
        &["run", "--data", "csv:/nonexistent/x.csv"],
        d,
        &["/nonexistent/x.csv"],
    );
    usage_error(&["run", "--model", "transformer"], d, &["invalid model"]);
    usage_error(&["run", "--optimizer", "adam2"], d, &["invalid optimizer"]);
    usage_error(
        &["run", "--device", "tpu"],
        d,
        &["expected cpu, cuda or cuda:N"],
    );
    #[cfg(not(feature = "cuda"))]
    usage_error(&["run", "--device", "cuda"], d, &["--features cuda"]);
    usage_error(
        &["run", "--config", "missing.toml"],
        d,
        &["cannot read config file missing.toml"],
    );
    usage_error(
        &["run", "--resume", "nowhere"],
        d,
        &["cannot resume nowhere"],
    );
    usage_error(&["run", "--bogus-flag"], d, &["--bogus-flag"]);
    usage_error(
        &["run", "--callback", "missing.wasm"],
        d,
        &["cannot read callback missing.wasm"],
    );
    std::fs::write(d.join("random.wasm"), b"this is not wasm at all").unwrap();
    usage_error(&["check", "random.wasm"], d, &["not a WebAssembly file"]);
    std::fs::write(d.join("core.wasm"), wat::parse_str("(module)").unwrap()).unwrap();
    usage_error(
        &["check", "core.wasm"],
        d,
        &[
            "core wasm module without the callback world",
            "wasm-tools component new",
        ],
    );
    let mut truncated = std::fs::read(WatGuest::new(&[kind::EPOCH_END]).write(d, "whole")).unwrap();
    truncated.truncate(truncated.len() / 2);
    std::fs::write(d.join("truncated.wasm"), truncated).unwrap();
    usage_error(
        &["check", "truncated.wasm"],
        d,
        &["truncated", "invalid component"],
    );
    usage_error(
        &["replay", "nothing.jsonl", "--callback", "logger"],
        d,
        &["cannot open nothing.jsonl"],
    );
    std::fs::write(d.join("bad.jsonl"), "{\"event\":\"train-start\"}\n").unwrap();
    usage_error(
        &["replay", "bad.jsonl", "--callback", "logger"],
        d,
        &["bad.jsonl line 1"],
    );
    usage_error(
        &[
            "run",
            "--callback",
            "logger",
            "--sandbox",
            "loger:memory_bytes=1MiB",
        ],
        d,
        &["invalid sandbox", "no callback named 'loger'", "logger"],
    );
    usage_error(
        &[
            "run",
            "--callback",
            "logger",
            "--sandbox",
            "call_timeout=soon",
        ],
        d,
        &["call_timeout=soon", "duration like 50ms"],
    );
    usage_error(
        &["check", "logger", "--sandbox", "memory=1MiB"],
        d,
        &["unknown key 'memory'", "memory_bytes"],
    );
    // None of these runs could start, so none left a run directory behind.
    assert!(!d.join("runs").exists(), "a failed start left files behind");
}

#[test]
fn run_check_replay_and_export_work_together() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = trainrt(&["callbacks", "export", "cbs"], d);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(d.join("cbs/early-stopping.wasm").is_file());

    let out = trainrt(&["check", "cbs/early-stopping.wasm:patience=2"], d);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.contains("valid callback component")
            && text.contains("subscriptions: train-start, epoch-end"),
        "{text}"
    );
    assert!(text.contains("ms per call"), "{text}");

    // `--sandbox` sets limits per callback; check prints the ones that would apply.
    let out = trainrt(
        &[
            "check",
            "logger",
            "--sandbox",
            "call_timeout=2s,memory_bytes=16MiB,on_fault=abort",
            "--json",
        ],
        d,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["limits"]["call_timeout"], 2000);
    assert_eq!(report["limits"]["memory_bytes"], 16 << 20);
    assert_eq!(report["on_fault"], "abort");

    let out = trainrt(
        &[
            "run",
            "--epochs",
            "6",
            "--run-dir",
            "r",
            "--callback",
            "cbs/early-stopping.wasm:patience=1,min_delta=100",
            "--callback",
            "logger",
            "--sandbox",
            "logger:fuel_per_call=20_000_000,log_bytes_per_run=64KiB",
            "--json",
        ],
        d,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("r/config.json")).unwrap()).unwrap();
    let logger = &config["callbacks"][1];
    assert_eq!(logger["limits"]["fuel_per_call"], 20_000_000);
    assert_eq!(logger["limits"]["log_bytes_per_run"], 64 << 10);
    assert_eq!(
        config["callbacks"][0]["limits"]["fuel_per_call"], 50_000_000,
        "only the named callback changes"
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(summary["outcome"], "stopped");
    assert!(
        summary["reason"]
            .as_str()
            .unwrap()
            .starts_with("early-stopping:"),
        "{summary}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["type"] == "log" && l["callback"] == "logger")
    );

    // The run's `last` checkpoint, verified and described; a run directory stands for it.
    let out = trainrt(&["checkpoint", "r", "--json"], d);
    assert!(out.status.success(), "{}", stderr(&out));
    let ckpt: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ckpt["tag"], "last");
    assert_eq!(ckpt["epoch"], summary["epochs_completed"]);
    let states: Vec<&str> = ckpt["callback_states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["early-stopping", "logger"]);
    let tensors = ckpt["tensors"].as_array().unwrap();
    for prefix in ["model.", "optim."] {
        assert!(
            tensors
                .iter()
                .any(|t| t["name"].as_str().unwrap().starts_with(prefix)),
            "{ckpt}"
        );
    }
    let out = trainrt(&["checkpoint", "r/checkpoints/last.safetensors"], d);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("checkpoint `last`, checksum verified"),
        "{text}{}",
        stderr(&out)
    );
    std::fs::write(d.join("not-a-checkpoint.safetensors"), b"{}").unwrap();
    usage_error(
        &["checkpoint", "not-a-checkpoint.safetensors"],
        d,
        &["not-a-checkpoint.safetensors is corrupt"],
    );
    usage_error(
        &["checkpoint", "r/checkpoints/missing.safetensors"],
        d,
        &["cannot read checkpoint", "missing.safetensors"],
    );
    // Each cause is said once, though the error also carries it as its source.
    let err = stderr(&trainrt(
        &["checkpoint", "r/checkpoints/missing.safetensors"],
        d,
    ));
    assert_eq!(err.matches("os error").count(), 1, "{err}");

    // Replaying the recorded events gives the same stop decision, at the same epoch.
    let out = trainrt(
        &[
            "replay",
            "r/events.jsonl",
            "--callback",
            "early-stopping:patience=1,min_delta=100",
        ],
        d,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let decisions: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let stop = decisions
        .iter()
        .find(|d| d["decision"]["kind"] == "stop-training")
        .expect("a stop");
    assert_eq!(
        stop["epoch"],
        summary["epochs_completed"].as_u64().unwrap() - 1
    );

    // `--expect` checks a replay against the run's own decisions, and shows what differs.
    let replay = |spec: &str| {
        let callbacks = ["--callback", spec, "--callback", "logger"];
        let mut args = vec!["replay", "r/events.jsonl"];
        args.extend(callbacks);
        args.extend(["--expect", "r/decisions.jsonl"]);
        trainrt(&args, d)
    };
    let same = replay("early-stopping:patience=1,min_delta=100");
    assert_eq!(same.status.code(), Some(0), "{}", stderr(&same));
    assert!(
        stderr(&same).contains("decisions match r/decisions.jsonl"),
        "{}",
        stderr(&same)
    );
    let other = replay("early-stopping:patience=3,min_delta=100");
    let err = stderr(&other);
    assert_eq!(other.status.code(), Some(1), "{err}");
    assert!(
        err.contains("decisions differ from r/decisions.jsonl")
            && err.contains("  - {")
            && err.contains("stop-training"),
        "{err}"
    );

    // A second run into the same directory is refused; --resume continues it.
    usage_error(
        &["run", "--run-dir", "r"],
        d,
        &["already holds a run", "--resume r"],
    );
    let out = trainrt(&["run", "--resume", "r", "--epochs", "8"], d);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn a_core_module_carrying_the_callback_world_runs_without_wasm_tools() {
    // What `cargo build --target wasm32-unknown-unknown` makes of an SDK callback: a core module
    // with the world embedded. trainrt makes it a component on load, as it does the bundled ones.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let guest = crate::common::deciding_guest(
        &[kind::EPOCH_END],
        "on-epoch-end",
        &[crate::common::Decision::Stop("core module says stop")],
    );
    std::fs::write(d.join("stopper.wasm"), guest.core_module()).unwrap();
    let out = trainrt(&["check", "stopper.wasm"], d);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("made a component on load"), "{text}");
    let out = trainrt(&["run", "--epochs", "3", "--callback", "stopper.wasm"], d);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("stopped after 1 epochs")
            && stderr(&out).contains("core module says stop"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn wit_prints_the_contract_this_binary_speaks() {
    let dir = tempfile::tempdir().unwrap();
    let out = trainrt(&["wit"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let wit = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit/callbacks.wit");
    assert_eq!(out.stdout, std::fs::read(wit).unwrap());
}

#[test]
fn callbacks_list_names_all_six() {
    let dir = tempfile::tempdir().unwrap();
    let out = trainrt(&["callbacks", "list"], dir.path());
    let text = String::from_utf8_lossy(&out.stdout);
    for name in [
        "logger",
        "early-stopping",
        "model-checkpoint",
        "lr-schedule",
        "reduce-lr-on-plateau",
        "terminate-on-nan",
    ] {
        assert!(text.contains(name), "{text}");
    }
}
