use super::*;
use trainrt_guest::testing::names;
use trainrt_guest::{Decision, EventKind, Metric, testing};

fn new(params: &[(&str, &str)]) -> Result<EarlyStopping, String> {
    EarlyStopping::init(&mut Config::from_pairs(params)?).map(|(cb, _)| cb)
}

/// Feeds one epoch-end with `monitor = value` and returns the decisions.
fn epoch(cb: &mut EarlyStopping, monitor: &str, epoch: u32, value: f64) -> Vec<Decision> {
    let names = names(&["loss", monitor]);
    let values = [0.5, value];
    let mut out = Decisions::new();
    cb.on_epoch_end(
        &EpochMetrics::new(epoch, u64::from(epoch) * 100, &names, &values),
        &mut out,
    );
    out.into_vec()
}

fn is_stop(d: &Decision) -> bool {
    matches!(d, Decision::StopTraining(_))
}

/// Feeds `values` (epoch i gets `values[i]`) until a stop decision; returns its epoch.
fn stop_epoch(
    params: &[(&str, &str)],
    monitor: &str,
    values: &[f64],
) -> Result<Option<u32>, String> {
    let mut cb = new(params)?;
    for (e, v) in (0u32..).zip(values) {
        if epoch(&mut cb, monitor, e, *v).iter().any(is_stop) {
            return Ok(Some(e));
        }
    }
    Ok(None)
}

#[test]
fn stops_where_keras_does_worked_example() -> Result<(), String> {
    // Keras by hand, patience=2, min_delta=0, mode min (val_loss):
    //   epoch 0: 1.00  wait 0->1; improves on None -> best=1.00, wait=0
    //   epoch 1: 0.90  wait 0->1; 0.90 < 1.00    -> best=0.90, wait=0
    //   epoch 2: 0.91  wait 0->1; no improvement; 1 >= 2? no
    //   epoch 3: 0.92  wait 1->2; no improvement; 2 >= 2 and epoch > 0 -> stop at epoch 3
    let values = [1.0, 0.9, 0.91, 0.92, 0.93, 0.94];
    assert_eq!(
        stop_epoch(&[("patience", "2")], "val_loss", &values)?,
        Some(3)
    );

    let mut cb = new(&[("patience", "2")])?;
    for (e, v) in (0u32..3).zip(values) {
        epoch(&mut cb, "val_loss", e, v);
    }
    assert_eq!(
        epoch(&mut cb, "val_loss", 3, values[3]),
        vec![
            Decision::LogMetric(Metric {
                name: WAIT_METRIC.into(),
                value: 2.0
            }),
            Decision::StopTraining(
                "early-stopping: val_loss did not improve for 2 epochs (best 0.9000 at epoch 1)"
                    .into()
            ),
        ]
    );
    Ok(())
}

#[test]
fn patience_zero_stops_at_the_first_non_improvement_but_never_at_epoch_zero() -> Result<(), String>
{
    assert_eq!(stop_epoch(&[], "val_loss", &[1.0, 0.5, 0.6])?, Some(2));
    let mut cb = new(&[])?;
    epoch(&mut cb, "val_loss", 0, 1.0);
    assert_eq!(
        epoch(&mut cb, "val_loss", 1, 1.5).last(),
        Some(&Decision::StopTraining(
            "early-stopping: val_loss did not improve for 1 epoch (best 1.0000 at epoch 0)".into()
        ))
    );
    // An infinite first value is still the first best, as Keras' `best = None` makes it.
    assert_eq!(
        stop_epoch(&[], "val_loss", &[f64::INFINITY, 1.0, 2.0])?,
        Some(2)
    );
    Ok(())
}

#[test]
fn min_delta_requires_a_large_enough_improvement() -> Result<(), String> {
    // min_delta=0.05: epoch 1 improves (0.90 < 1.00 - 0.05); 0.88 and 0.86 are not below
    // 0.90 - 0.05, so wait reaches 2 at epoch 3. Without min_delta it never stops.
    let values = [1.0, 0.9, 0.88, 0.86, 0.84, 0.82];
    let params = [("patience", "2"), ("min_delta", "0.05")];
    assert_eq!(stop_epoch(&params, "val_loss", &values)?, Some(3));
    assert_eq!(stop_epoch(&[("patience", "2")], "val_loss", &values)?, None);
    Ok(())
}

#[test]
fn baseline_keeps_counting_until_beaten() -> Result<(), String> {
    // Improving but never below baseline 0.5: Keras keeps counting yet never stops on an
    // improving epoch; the first non-improvement (epoch 4, wait 5) stops.
    let params = [("patience", "2"), ("baseline", "0.5")];
    let values = [0.9, 0.8, 0.7, 0.6, 0.65];
    assert_eq!(stop_epoch(&params, "val_loss", &values)?, Some(4));
    let mut cb = new(&params)?;
    let mut last = Vec::new();
    for (e, v) in (0u32..).zip(values) {
        last = epoch(&mut cb, "val_loss", e, v);
    }
    assert_eq!(
        last.last(),
        Some(&Decision::StopTraining(
            "early-stopping: val_loss did not improve on baseline 0.5000 for 5 epochs \
             (best 0.6000 at epoch 3)"
                .into()
        ))
    );
    // Beating the baseline at epoch 1 resets the count: stops at epoch 3 as without one.
    assert_eq!(
        stop_epoch(&params, "val_loss", &[0.9, 0.4, 0.45, 0.46])?,
        Some(3)
    );
    Ok(())
}

#[test]
fn start_from_epoch_ignores_early_epochs() -> Result<(), String> {
    let values = [1.0, 2.0, 3.0, 0.5, 0.6];
    assert_eq!(
        stop_epoch(&[("start_from_epoch", "3")], "val_loss", &values)?,
        Some(4)
    );
    assert_eq!(stop_epoch(&[], "val_loss", &values)?, Some(1));
    Ok(())
}

#[test]
fn auto_mode_maximises_accuracy() -> Result<(), String> {
    let params = [("monitor", "val_accuracy"), ("patience", "1")];
    assert_eq!(
        stop_epoch(&params, "val_accuracy", &[0.5, 0.6, 0.7, 0.65])?,
        Some(3)
    );
    let forced_min = [
        ("monitor", "val_accuracy"),
        ("patience", "1"),
        ("mode", "min"),
    ];
    assert_eq!(
        stop_epoch(&forced_min, "val_accuracy", &[0.5, 0.6])?,
        Some(1)
    );
    Ok(())
}

#[test]
fn missing_values_are_skipped() -> Result<(), String> {
    let values = [1.0, f64::NAN, f64::NAN, 1.1];
    assert_eq!(
        stop_epoch(&[("patience", "1")], "val_loss", &values)?,
        Some(3)
    );
    // A metric the run does not have: never acts, only reports the wait.
    let mut cb = new(&[("monitor", "val_los")])?;
    let d = epoch(&mut cb, "val_loss", 5, 1.0);
    assert_eq!(
        d,
        vec![Decision::LogMetric(Metric {
            name: WAIT_METRIC.into(),
            value: 0.0
        })]
    );
    Ok(())
}

#[test]
fn restore_best_saves_on_improvement_and_restores_before_stopping() -> Result<(), String> {
    let mut cb = new(&[("patience", "1"), ("restore_best", "true")])?;
    let saved = |d: &[Decision]| d.contains(&Decision::SaveCheckpoint(BEST_TAG.into()));
    assert!(saved(&epoch(&mut cb, "val_loss", 0, 1.0)));
    assert!(saved(&epoch(&mut cb, "val_loss", 1, 0.8)));
    let d = epoch(&mut cb, "val_loss", 2, 0.9);
    assert_eq!(d.len(), 3);
    assert_eq!(d[1], Decision::RestoreCheckpoint(BEST_TAG.into()));
    assert!(is_stop(&d[2]));
    // Already restored when stopping: not again at train end.
    let mut out = Decisions::new();
    cb.on_train_end(
        &train_end(Outcome::Stopped("early-stopping: ...".into())),
        &mut out,
    );
    assert!(out.is_empty());
    Ok(())
}

fn train_end(outcome: Outcome) -> TrainEndInfo {
    TrainEndInfo {
        outcome,
        epoch: 9,
        step: 1000,
    }
}

#[test]
fn restore_best_restores_at_train_end_when_training_completes() -> Result<(), String> {
    let (mut cb, subs) = EarlyStopping::init(&mut Config::from_pairs(&[
        ("patience", "5"),
        ("restore_best", "true"),
    ])?)?;
    assert!(subs.contains(EventKind::TrainEnd));
    for (e, v) in (0u32..).zip([1.0, 0.8, 0.9]) {
        epoch(&mut cb, "val_loss", e, v);
    }
    let mut out = Decisions::new();
    cb.on_train_end(&train_end(Outcome::Completed), &mut out);
    assert_eq!(
        out.into_vec(),
        vec![Decision::RestoreCheckpoint(BEST_TAG.into())]
    );
    let mut out = Decisions::new();
    cb.on_train_end(&train_end(Outcome::Failed("disk full".into())), &mut out);
    assert!(out.is_empty());
    // Without restore_best, train end is not even subscribed.
    let (_, subs) = EarlyStopping::init(&mut Config::from_pairs(&[])?)?;
    assert_eq!(subs.events(), &[EventKind::TrainStart, EventKind::EpochEnd]);
    Ok(())
}

#[test]
fn snapshot_restore_continues_exactly() -> Result<(), String> {
    let params = [
        ("patience", "3"),
        ("restore_best", "true"),
        ("baseline", "0.2"),
    ];
    let values = [1.0, 0.7, 0.75, 0.6, 0.65, 0.66, 0.67, 0.68];
    let mut original = new(&params)?;
    for (e, v) in (0u32..4).zip(values) {
        epoch(&mut original, "val_loss", e, v);
    }
    let mut resumed = new(&params)?;
    resumed.restore(&original.snapshot())?;
    assert_eq!(resumed, original);
    for (e, v) in (4u32..).zip(&values[4..]) {
        assert_eq!(
            epoch(&mut resumed, "val_loss", e, *v),
            epoch(&mut original, "val_loss", e, *v)
        );
    }
    assert_eq!(resumed, original);
    Ok(())
}

#[test]
fn corrupt_state_is_rejected_and_leaves_the_callback_untouched() -> Result<(), String> {
    let mut cb = new(&[])?;
    let before = cb.clone();
    let state = cb.snapshot();
    assert!(cb.restore(&state[..state.len() - 1]).is_err());
    assert!(cb.restore(&[]).is_err());
    assert_eq!(cb, before);
    Ok(())
}

#[test]
fn bad_parameters_are_explained() -> Result<(), String> {
    let err = |params: &[(&str, &str)]| new(params).err();
    assert_eq!(
        err(&[("patience", "-1")]).as_deref(),
        Some("parameter patience=-1: expected a non-negative integer")
    );
    assert_eq!(
        err(&[("min_delta", "-0.1")]).as_deref(),
        Some("parameter min_delta=-0.1: expected a non-negative number")
    );
    assert_eq!(
        err(&[("mode", "up")]).as_deref(),
        Some("parameter mode=up: expected one of auto, min, max")
    );
    assert_eq!(
        err(&[("patiense", "3")]).as_deref(),
        Some(
            "unknown parameter 'patiense'; known parameters: monitor, mode, min_delta, patience, \
             baseline, start_from_epoch, restore_best"
        )
    );
    Ok(())
}

#[test]
fn warns_at_train_start_when_the_monitor_is_missing() -> Result<(), String> {
    let mut cb = new(&[("monitor", "val_f1")])?;
    cb.on_train_start(&testing::run_info(), &mut Decisions::new());
    let lines = trainrt_guest::log::take_captured();
    assert_eq!(lines.len(), 1);
    assert!(lines[0].1.contains("'val_f1' is not available"));
    Ok(())
}
