//! Real training with real (bundled) guests through the host.

use crate::common::{jsonl, quick_config, summary, train, weights};
use trainrt::trainer::RunOutcome;

#[test]
fn default_mlp_on_digits_reaches_95_percent_with_bundled_callbacks() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = quick_config(30);
    config.push_callback("logger").unwrap();
    config.push_callback("terminate-on-nan").unwrap();
    let result = train(config, dir.path());
    assert_eq!(result.outcome, RunOutcome::Completed);
    assert_eq!(result.epochs_completed, 30);

    let metrics = jsonl(dir.path(), "metrics.jsonl");
    assert_eq!(metrics.len(), 30);
    for (i, m) in metrics.iter().enumerate() {
        assert_eq!(m["epoch"], i as u64);
        for key in [
            "loss",
            "accuracy",
            "val_loss",
            "val_accuracy",
            "lr",
            "grad_norm",
        ] {
            assert!(m[key].is_number(), "epoch {i} lacks {key}: {m}");
        }
    }
    let best = metrics
        .iter()
        .map(|m| m["val_accuracy"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(best >= 0.95, "best validation accuracy {best}");

    // events.jsonl holds exactly what was delivered: logger wants train-start, epoch-end,
    // checkpoint-saved, train-end and faults; terminate-on-nan only faults (the host checks
    // every loss itself), so no batch event reaches anyone.
    let events = jsonl(dir.path(), "events.jsonl");
    assert_eq!(events.first().unwrap()["event"], "train-start");
    assert_eq!(events.last().unwrap()["event"], "train-end");
    assert_eq!(
        events.iter().filter(|e| e["event"] == "epoch-end").count(),
        30
    );
    assert!(
        !events
            .iter()
            .any(|e| e["event"] == "batch-end" || e["event"] == "batch-start"),
        "nobody subscribed to batch events"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e["event"] == "epoch-start")
            .count(),
        0,
        "nobody subscribed to epoch-start"
    );

    let s = summary(dir.path());
    assert_eq!(s["outcome"], "completed");
    let logger = &s["callbacks"][0];
    assert_eq!(logger["name"], "logger");
    assert_eq!(logger["status"], "active");
    assert!(logger["calls"].as_u64().unwrap() >= 31);
    assert!(dir.path().join("checkpoints/last.safetensors").is_file());
    let log = jsonl(dir.path(), "log.jsonl");
    assert!(
        log.iter().any(|l| l["callback"] == "logger"
            && l["message"].as_str().unwrap().contains("val_accuracy")),
        "logger logged epochs"
    );
}

#[test]
fn terminate_on_nan_stops_a_diverging_run_at_its_first_non_finite_step_without_per_batch_calls() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = quick_config(5);
    // Plain SGD at this rate overflows within the first epoch.
    config.optimizer = "sgd".parse().unwrap();
    config.lr = 1e12;
    config.push_callback("terminate-on-nan").unwrap();
    let result = train(config, dir.path());
    assert_eq!(result.outcome, RunOutcome::Stopped);
    let reason = result.reason.unwrap();
    assert!(
        reason.contains("terminate-on-nan: loss is"),
        "stop reason: {reason}"
    );

    // It was told once, by the host's non-finite-loss fault event, after the step where the loss
    // first went bad, and training stopped right after that step.
    let events = jsonl(dir.path(), "events.jsonl");
    let faults: Vec<_> = events.iter().filter(|e| e["event"] == "fault").collect();
    assert_eq!(faults.len(), 1, "{faults:?}");
    let bad_step = faults[0]["step"].as_u64().unwrap();
    assert_eq!(result.steps, bad_step);
    assert!(reason.ends_with(&format!("step {bad_step}")), "{reason}");
    let s = summary(dir.path());
    let calls = s["callbacks"][0]["calls"].as_u64().unwrap();
    assert!(
        calls < 10,
        "{calls} guest calls for {bad_step} steps: it is not called per batch"
    );
}

#[test]
fn a_logger_leaves_weights_bitwise_identical() {
    let plain = tempfile::tempdir().unwrap();
    let logged = tempfile::tempdir().unwrap();
    train(quick_config(4), plain.path());
    let mut config = quick_config(4);
    config.push_callback("logger:every_n_batches=5").unwrap();
    train(config, logged.path());
    assert_eq!(
        weights(plain.path(), "last"),
        weights(logged.path(), "last")
    );
}

#[test]
fn same_seed_same_weights_other_seed_other_weights() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let c = tempfile::tempdir().unwrap();
    train(quick_config(2), a.path());
    train(quick_config(2), b.path());
    train(
        trainrt::TrainConfig {
            seed: 7,
            ..quick_config(2)
        },
        c.path(),
    );
    assert_eq!(weights(a.path(), "last"), weights(b.path(), "last"));
    assert_ne!(weights(a.path(), "last"), weights(c.path(), "last"));
}

#[test]
fn adamw_and_cnn_train_too() {
    let dir = tempfile::tempdir().unwrap();
    let config = trainrt::TrainConfig {
        model: "cnn".parse().unwrap(),
        optimizer: "adamw".parse().unwrap(),
        lr: 0.003,
        ..quick_config(3)
    };
    let result = train(config, dir.path());
    assert_eq!(result.outcome, RunOutcome::Completed);
    let last = jsonl(dir.path(), "metrics.jsonl").pop().unwrap();
    assert!(last["val_accuracy"].as_f64().unwrap() > 0.8, "{last}");
}
