use super::*;
use trainrt_guest::{Decision, EventKind, testing};

fn new(params: &[(&str, &str)]) -> Result<LrSchedule, String> {
    LrSchedule::init(&mut Config::from_pairs(params)?).map(|(cb, _)| cb)
}

/// A fresh run of 10 epochs x 100 batches at initial lr 0.1.
fn started(params: &[(&str, &str)]) -> Result<LrSchedule, String> {
    let mut cb = new(params)?;
    cb.on_train_start(&testing::run_info(), &mut Decisions::new());
    Ok(cb)
}

fn rate_set(out: Decisions) -> Option<f64> {
    match out.into_vec().as_slice() {
        [] => None,
        [Decision::SetLearningRate(lr)] => Some(*lr),
        other => panic!("unexpected decisions {other:?}"),
    }
}

/// Runs epochs 0.. as the host would (each starts with the rate last set); returns the
/// decisions' rates, `None` where nothing was sent.
fn per_epoch(cb: &mut LrSchedule, epochs: u32) -> Vec<Option<f64>> {
    let mut lr = 0.1;
    (0..epochs)
        .map(|epoch| {
            let mut out = Decisions::new();
            cb.on_epoch_start(
                &EpochInfo {
                    epoch,
                    step: u64::from(epoch) * 100,
                    lr,
                },
                &mut out,
            );
            let set = rate_set(out);
            lr = set.unwrap_or(lr);
            set
        })
        .collect()
}

/// Steps `steps` (each a batch-start); returns `(step, rate)` for each rate sent.
fn per_step(cb: &mut LrSchedule, steps: std::ops::Range<u64>) -> Vec<(u64, f64)> {
    steps
        .filter_map(|step| {
            let mut out = Decisions::new();
            let info = BatchInfo {
                epoch: (step / 100) as u32,
                batch: (step % 100) as u32,
                step,
            };
            cb.on_batch_start(&info, &mut out);
            rate_set(out).map(|lr| (step, lr))
        })
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn step_per_epoch_sends_only_changes() -> Result<(), String> {
    let (mut cb, subs) = LrSchedule::init(&mut Config::from_pairs(&[("step_size", "3")])?)?;
    assert_eq!(
        subs.events(),
        &[EventKind::TrainStart, EventKind::EpochStart]
    );
    cb.on_train_start(&testing::run_info(), &mut Decisions::new());
    let sent = per_epoch(&mut cb, 7);
    let changed: Vec<usize> = (0..sent.len()).filter(|i| sent[*i].is_some()).collect();
    assert_eq!(changed, [3, 6]);
    assert!(close(sent[3].unwrap_or_default(), 0.01));
    assert!(close(sent[6].unwrap_or_default(), 0.001));
    Ok(())
}

#[test]
fn exponential_default_gamma_is_0_95() -> Result<(), String> {
    let mut cb = started(&[("schedule", "exponential")])?;
    let sent = per_epoch(&mut cb, 3);
    assert_eq!(sent[0], None);
    assert!(close(sent[1].unwrap_or_default(), 0.095));
    assert!(close(sent[2].unwrap_or_default(), 0.1 * 0.95 * 0.95));
    Ok(())
}

#[test]
fn cosine_defaults_t_max_to_the_planned_run() -> Result<(), String> {
    // 10 planned epochs: halfway at epoch 5.
    let mut cb = started(&[("schedule", "cosine")])?;
    let sent = per_epoch(&mut cb, 10);
    assert!(close(sent[5].unwrap_or_default(), 0.05));
    // Per step, 10 x 100 planned steps: halfway at step 500.
    let mut cb = started(&[("schedule", "cosine"), ("per", "step")])?;
    let sent = per_step(&mut cb, 0..1000);
    assert_eq!(sent.len(), 999, "a new rate every step but the first");
    let (step, lr) = sent[499];
    assert_eq!(step, 500);
    assert!(close(lr, 0.05));
    Ok(())
}

#[test]
fn a_zero_rate_is_never_sent() -> Result<(), String> {
    let mut cb = started(&[("schedule", "cosine"), ("t_max", "4")])?;
    let sent = per_epoch(&mut cb, 6);
    assert_eq!(sent[4], None);
    assert_eq!(sent[5], None);
    let warnings = trainrt_guest::log::take_captured();
    assert_eq!(warnings.len(), 1, "warned once");
    assert!(warnings[0].1.contains("at epoch 4"));
    Ok(())
}

#[test]
fn constant_with_warmup_per_step() -> Result<(), String> {
    let mut cb = started(&[("schedule", "constant"), ("per", "step"), ("warmup", "4")])?;
    let sent = per_step(&mut cb, 0..10);
    let expected = [(0, 0.01), (1, 0.0325), (2, 0.055), (3, 0.0775), (4, 0.1)];
    assert_eq!(sent.len(), expected.len());
    for ((step, lr), (e_step, e_lr)) in sent.iter().zip(expected) {
        assert_eq!(*step, e_step);
        assert!(close(*lr, e_lr), "step {step}: {lr} vs {e_lr}");
    }
    Ok(())
}

#[test]
fn nothing_is_sent_before_train_start() -> Result<(), String> {
    let mut cb = new(&[("schedule", "constant"), ("warmup", "3")])?;
    let mut out = Decisions::new();
    cb.on_epoch_start(
        &EpochInfo {
            epoch: 0,
            step: 0,
            lr: 0.1,
        },
        &mut out,
    );
    assert!(out.is_empty());
    Ok(())
}

#[test]
fn resume_per_step_continues_exactly() -> Result<(), String> {
    let params = [("per", "step"), ("step_size", "150")];
    let mut original = started(&params)?;
    per_step(&mut original, 0..420);
    let mut resumed = new(&params)?;
    resumed.restore(&original.snapshot())?;
    let resume_info = RunInfo {
        start_epoch: 4,
        start_step: 420,
        ..testing::run_info()
    };
    resumed.on_train_start(&resume_info, &mut Decisions::new());
    assert_eq!(resumed, original);
    assert_eq!(
        per_step(&mut resumed, 420..700),
        per_step(&mut original, 420..700)
    );
    assert!(resumed.restore(&[STATE_VERSION, 1, 0]).is_err());
    Ok(())
}

#[test]
fn bad_parameters_are_explained() -> Result<(), String> {
    let err = |params: &[(&str, &str)]| new(params).err();
    assert_eq!(
        err(&[("schedule", "linear")]).as_deref(),
        Some("parameter schedule=linear: expected one of step, exponential, cosine, constant")
    );
    assert_eq!(
        err(&[("schedule", "cosine"), ("gamma", "0.5")]).as_deref(),
        Some("parameter gamma is not used by schedule=cosine (only by step, exponential)")
    );
    assert_eq!(
        err(&[("t_max", "10")]).as_deref(),
        Some("parameter t_max is not used by schedule=step (only by cosine)")
    );
    assert_eq!(
        err(&[("step_size", "0")]).as_deref(),
        Some("parameter step_size=0: expected a positive integer")
    );
    assert_eq!(
        err(&[("gamma", "0")]).as_deref(),
        Some("parameter gamma=0: expected a positive number")
    );
    assert_eq!(
        err(&[("warmup_start_factor", "0")]).as_deref(),
        Some("parameter warmup_start_factor=0: expected a number in (0, 1]")
    );
    assert_eq!(
        err(&[("per", "batch")]).as_deref(),
        Some("parameter per=batch: expected one of epoch, step")
    );
    assert_eq!(
        err(&[("warm_up", "5")]).as_deref(),
        Some(
            "unknown parameter 'warm_up'; known parameters: schedule, per, step_size, gamma, \
             t_max, min_lr, warmup, warmup_start_factor"
        )
    );
    Ok(())
}
