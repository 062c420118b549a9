//! Decisions: validated, applied at fixed points, recorded; Keras semantics of the bundled
//! callbacks checked on replayed metric sequences.

use crate::common::{
    Decision, deciding_guest, jsonl, kind, quick_config, sandbox, summary, train, wasip2_guest,
    weights,
};
use trainrt::callback::CallbackOptions;
use trainrt::contract::{
    BatchInfo, BatchMetrics, Decision as WitDecision, EpochInfo, EpochMetrics, Metric, RunInfo,
    ValidationMetrics,
};
use trainrt::events::Event;
use trainrt::host::CallbackHost;
use trainrt::trainer::RunOutcome;

fn run_info() -> RunInfo {
    RunInfo {
        run_name: "replay".into(),
        model: "mlp(64-128-10)".into(),
        parameter_count: 9610,
        dataset: "digits".into(),
        train_samples: 1438,
        validation_samples: 359,
        epochs: 20,
        batch_size: 32,
        batches_per_epoch: 45,
        optimizer: "sgd".into(),
        initial_lr: 0.1,
        seed: 42,
        metric_names: trainrt::events::METRIC_NAMES.map(String::from).to_vec(),
        start_epoch: 0,
        start_step: 0,
    }
}

/// Feeds epoch-end events with these val_loss values; returns (epoch, decision) pairs.
fn replay_val_loss(spec: &str, val_losses: &[f64]) -> Vec<(u32, WitDecision)> {
    let options = vec![CallbackOptions::new(spec.parse().unwrap())];
    let mut host = CallbackHost::start(sandbox(), &options).unwrap();
    host.dispatch(&Event::TrainStart(run_info()));
    let mut out = Vec::new();
    for (epoch, v) in val_losses.iter().enumerate() {
        let values = vec![0.5, 0.9, *v, 0.9, 0.1, 1.0];
        let (_, answers) = host.dispatch(&Event::EpochEnd(EpochMetrics {
            epoch: epoch as u32,
            step: 45 * (epoch as u64 + 1),
            values,
        }));
        for a in answers {
            out.extend(a.decisions.into_iter().map(|d| (epoch as u32, d)));
        }
    }
    assert!(host.take_faults().is_empty());
    out
}

/// The decisions `tests/fixtures/deciding-guest` returns for one labelled event (its
/// `every_decision`, as the host's types).
fn every_decision(label: &str, n: u32) -> Vec<WitDecision> {
    vec![
        WitDecision::StopTraining(format!("stop after {label}")),
        WitDecision::EndEpoch,
        WitDecision::SaveCheckpoint(format!("tag-{label}")),
        WitDecision::SetLearningRate(0.5 / f64::from(n + 1)),
        WitDecision::RestoreCheckpoint(format!("restore-{label}")),
        WitDecision::ValidateNow,
        WitDecision::LogMetric(Metric {
            name: format!("metric_{label}").replace('-', "_"),
            value: -f64::from(n) - 0.25,
        }),
    ]
}

/// A Rust callback built on the guest SDK returns every kind of decision, intact, from each
/// per-batch and per-epoch event; a call that decides nothing after one that decided seven
/// returns nothing, and each call's strings are its own.
#[test]
fn an_sdk_callbacks_decisions_reach_the_host_intact_from_every_per_batch_and_epoch_event() {
    let wasm = wasip2_guest("deciding-guest");
    let mut options = CallbackOptions::new(wasm.display().to_string().parse().unwrap());
    options.inert_wasi = true;
    let mut host = CallbackHost::start(sandbox(), &[options]).unwrap();
    host.dispatch(&Event::TrainStart(run_info()));
    let events = |round: u32| {
        let (epoch, step) = (round, 45 * u64::from(round));
        [
            (
                "epoch-start",
                Event::EpochStart(EpochInfo {
                    epoch,
                    step,
                    lr: 0.1,
                }),
            ),
            (
                "batch-start",
                Event::BatchStart(BatchInfo {
                    epoch,
                    batch: 0,
                    step,
                }),
            ),
            (
                "batch-end",
                Event::BatchEnd(BatchMetrics {
                    epoch,
                    batch: 0,
                    step,
                    loss: 0.5,
                    accuracy: 0.75,
                    lr: 0.1,
                    grad_norm: 2.0,
                }),
            ),
            (
                "validation-end",
                Event::ValidationEnd(ValidationMetrics {
                    epoch,
                    step,
                    val_loss: 0.4,
                    val_accuracy: 0.8,
                }),
            ),
            (
                "epoch-end",
                Event::EpochEnd(EpochMetrics {
                    epoch,
                    step,
                    values: vec![0.5, 0.75, 0.4, 0.8, 0.1, 2.0],
                }),
            ),
        ]
    };
    let mut n = 0;
    for round in 0..4 {
        for (name, event) in events(round) {
            let (delivered, answers) = host.dispatch(&event);
            assert!(delivered, "{name} was not delivered");
            let got: Vec<WitDecision> = answers.into_iter().flat_map(|a| a.decisions).collect();
            let expected = if n % 2 == 0 {
                every_decision(&format!("{name}-{n}"), n)
            } else {
                Vec::new()
            };
            assert_eq!(got, expected, "event {n}, {name}");
            n += 1;
        }
    }
    assert!(host.take_faults().is_empty());
}

fn stop_epochs(decisions: &[(u32, WitDecision)]) -> Vec<u32> {
    decisions
        .iter()
        .filter(|(_, d)| matches!(d, WitDecision::StopTraining(_)))
        .map(|(e, _)| *e)
        .collect()
}

#[test]
fn early_stopping_stops_where_keras_does() {
    // Keras: epoch 0 improves (best 1.0), epoch 1 improves (0.9, wait 0), epochs 2 and 3 do not:
    // wait reaches 2 = patience at epoch 3, so training stops at the end of epoch 3.
    let d = replay_val_loss(
        "early-stopping:patience=2",
        &[1.0, 0.9, 0.91, 0.92, 0.5, 0.4],
    );
    assert_eq!(stop_epochs(&d), vec![3]);
    // min_delta: 0.9 -> 0.89 is not an improvement of more than 0.05, so the wait goes on.
    let d = replay_val_loss(
        "early-stopping:patience=2,min_delta=0.05",
        &[1.0, 0.9, 0.89, 0.88, 0.5],
    );
    assert_eq!(stop_epochs(&d).first(), Some(&3));
    // start_from_epoch: the first 3 epochs are ignored entirely.
    let d = replay_val_loss(
        "early-stopping:patience=1,start_from_epoch=3",
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
    );
    assert_eq!(stop_epochs(&d).first(), Some(&4));
    // baseline: improvements that do not beat the baseline do not reset the wait (Keras never
    // stops on an improving epoch, though): waits 1, 2 (improving), 3 -> stop at epoch 2, one
    // epoch earlier than without a baseline.
    let d = replay_val_loss(
        "early-stopping:patience=2,baseline=0.5",
        &[1.0, 0.9, 0.95, 0.96, 0.97],
    );
    assert_eq!(stop_epochs(&d).first(), Some(&2));
    let d = replay_val_loss("early-stopping:patience=2", &[1.0, 0.9, 0.95, 0.96, 0.97]);
    assert_eq!(stop_epochs(&d).first(), Some(&3));
}

#[test]
fn early_stopping_with_restore_best_saves_then_restores() {
    let d = replay_val_loss(
        "early-stopping:patience=1,restore_best=true",
        &[1.0, 0.5, 0.7, 0.8],
    );
    let saves: Vec<u32> = d
        .iter()
        .filter(|(_, d)| matches!(d, WitDecision::SaveCheckpoint(_)))
        .map(|(e, _)| *e)
        .collect();
    assert_eq!(saves, vec![0, 1]);
    let restore_then_stop: Vec<&WitDecision> =
        d.iter().filter(|(e, _)| *e == 2).map(|(_, d)| d).collect();
    assert!(
        matches!(
            restore_then_stop.as_slice(),
            [
                ..,
                WitDecision::RestoreCheckpoint(_),
                WitDecision::StopTraining(_)
            ]
        ),
        "{restore_then_stop:?}"
    );
}

#[test]
fn lr_schedule_changes_the_learning_rate_the_trainer_reports() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = quick_config(5);
    config
        .push_callback("lr-schedule:schedule=step,step_size=2,gamma=0.5")
        .unwrap();
    train(config, dir.path());
    let lrs: Vec<f64> = jsonl(dir.path(), "metrics.jsonl")
        .iter()
        .map(|m| m["lr"].as_f64().unwrap())
        .collect();
    assert_eq!(lrs, vec![0.05, 0.05, 0.025, 0.025, 0.0125]);
}

#[test]
fn later_callback_wins_the_learning_rate_and_the_override_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let a = deciding_guest(
        &[kind::EPOCH_START],
        "on-epoch-start",
        &[Decision::Lr(0.01)],
    )
    .write(dir.path(), "a");
    let b = deciding_guest(
        &[kind::EPOCH_START],
        "on-epoch-start",
        &[Decision::Lr(0.02)],
    )
    .write(dir.path(), "b");
    let run = dir.path().join("run");
    let mut config = quick_config(2);
    config.push_callback(a.to_str().unwrap()).unwrap();
    config.push_callback(b.to_str().unwrap()).unwrap();
    train(config, &run);
    let lrs: Vec<f64> = jsonl(&run, "metrics.jsonl")
        .iter()
        .map(|m| m["lr"].as_f64().unwrap())
        .collect();
    assert_eq!(lrs, vec![0.02, 0.02]);
    let records = jsonl(&run, "decisions.jsonl");
    assert_eq!(records.len(), 4);
    assert_eq!(records[0]["callback"], "a");
    assert_eq!(records[0]["status"], "overridden");
    assert_eq!(records[0]["reason"], "overridden by b");
    assert_eq!(records[1]["status"], "applied");
    assert_eq!(records[1]["decision"]["lr"], 0.02);
}

#[test]
fn invalid_decisions_are_rejected_recorded_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let evil = deciding_guest(
        &[kind::BATCH_END],
        "on-batch-end",
        &[
            Decision::Lr(f64::NAN),
            Decision::Lr(f64::INFINITY),
            Decision::Lr(-0.1),
            Decision::Lr(1e30),
            Decision::Save("../../etc/passwd"),
            Decision::Save("last"),
            Decision::Restore("never-saved"),
            Decision::Metric("loss", 1.0),
        ],
    )
    .write(dir.path(), "evil");
    let plain = dir.path().join("plain");
    let attacked = dir.path().join("attacked");
    train(quick_config(2), &plain);
    let mut config = quick_config(2);
    config.push_callback(evil.to_str().unwrap()).unwrap();
    train(config, &attacked);
    assert_eq!(weights(&plain, "last"), weights(&attacked, "last"));
    let records = jsonl(&attacked, "decisions.jsonl");
    assert!(!records.is_empty());
    assert!(
        records
            .iter()
            .all(|r| r["status"] == "rejected" && r["reason"].is_string()),
        "{:?}",
        records.first()
    );
    assert_eq!(records[0]["decision"]["lr"], "NaN");
    // Nothing escaped the checkpoint directory.
    assert!(!dir.path().join("etc").exists() && !attacked.join("etc").exists());
    let names: Vec<String> = std::fs::read_dir(attacked.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| n.starts_with("last.")), "{names:?}");
}

#[test]
fn a_stop_ends_training_with_its_reason_and_a_final_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let stopper = deciding_guest(
        &[kind::EPOCH_END],
        "on-epoch-end",
        &[Decision::Metric("custom", 2.5), Decision::Stop("enough")],
    )
    .write(dir.path(), "stopper");
    let run = dir.path().join("run");
    let mut config = quick_config(10);
    config.push_callback(stopper.to_str().unwrap()).unwrap();
    let result = train(config, &run);
    assert_eq!(result.outcome, RunOutcome::Stopped);
    assert_eq!(result.reason.as_deref(), Some("stopper: enough"));
    assert_eq!(result.epochs_completed, 1);
    assert_eq!(summary(&run)["reason"], "stopper: enough");
    let metrics = jsonl(&run, "metrics.jsonl");
    assert_eq!(metrics.len(), 1);
    assert_eq!(metrics[0]["custom"], 2.5);
    assert!(run.join("checkpoints/last.safetensors").is_file());
}

#[test]
fn save_and_restore_by_tag() {
    let dir = tempfile::tempdir().unwrap();
    // Saves "snap" at every epoch start; restores it at every epoch end: each epoch's training is
    // undone, so the final weights equal those saved at the start of the last epoch, which are
    // the initial weights.
    let saver = deciding_guest(
        &[kind::EPOCH_START],
        "on-epoch-start",
        &[Decision::Save("snap")],
    );
    let saver = saver.write(dir.path(), "saver");
    let restorer = deciding_guest(
        &[kind::EPOCH_END],
        "on-epoch-end",
        &[Decision::Restore("snap")],
    )
    .write(dir.path(), "restorer");
    let run = dir.path().join("run");
    let mut config = quick_config(3);
    config.push_callback(saver.to_str().unwrap()).unwrap();
    config.push_callback(restorer.to_str().unwrap()).unwrap();
    train(config, &run);
    assert!(run.join("checkpoints/snap.safetensors").is_file());
    assert_eq!(weights(&run, "snap"), weights(&run, "last"));
    let records = jsonl(&run, "decisions.jsonl");
    assert!(
        records.iter().all(|r| r["status"] == "applied"),
        "{records:?}"
    );
}

#[test]
fn a_checkpoint_after_a_restore_holds_the_restored_weights() {
    let dir = tempfile::tempdir().unwrap();
    // At every epoch end "mark" saves the epoch's weights, then "snap" (the weights at the
    // epoch's start) is restored, then `last` is saved: of the same epoch and step as "mark",
    // but not the same weights.
    let guests = [
        (
            "saver",
            kind::EPOCH_START,
            "on-epoch-start",
            Decision::Save("snap"),
        ),
        (
            "marker",
            kind::EPOCH_END,
            "on-epoch-end",
            Decision::Save("mark"),
        ),
        (
            "restorer",
            kind::EPOCH_END,
            "on-epoch-end",
            Decision::Restore("snap"),
        ),
    ];
    let run = dir.path().join("run");
    let mut config = quick_config(2);
    for (name, event, func, decision) in guests {
        let path = deciding_guest(&[event], func, &[decision]).write(dir.path(), name);
        config.push_callback(path.to_str().unwrap()).unwrap();
    }
    train(config, &run);
    assert_eq!(weights(&run, "last"), weights(&run, "snap"));
    assert_ne!(weights(&run, "last"), weights(&run, "mark"));
    let meta = |tag: &str| {
        let path = run.join(format!("checkpoints/{tag}.safetensors"));
        let c = trainrt::checkpoint::load(&path).unwrap();
        (c.meta.epoch, c.meta.step)
    };
    assert_eq!(meta("last"), meta("mark"));
}
