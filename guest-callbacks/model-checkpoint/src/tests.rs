use super::*;
use trainrt_guest::testing::names;
use trainrt_guest::{Decision, EventKind};

fn new(params: &[(&str, &str)]) -> Result<ModelCheckpoint, String> {
    ModelCheckpoint::init(&mut Config::from_pairs(params)?).map(|(cb, _)| cb)
}

/// Feeds epochs 0.. with `val_loss = values[i]`; returns the tags saved, per epoch.
fn saves(cb: &mut ModelCheckpoint, first_epoch: u32, values: &[f64]) -> Vec<Vec<String>> {
    let names = names(&["loss", "val_loss"]);
    (first_epoch..)
        .zip(values)
        .map(|(e, v)| {
            let values = [0.3, *v];
            let mut out = Decisions::new();
            cb.on_epoch_end(&EpochMetrics::new(e, 0, &names, &values), &mut out);
            out.into_vec()
                .into_iter()
                .map(|d| match d {
                    Decision::SaveCheckpoint(tag) => tag,
                    other => panic!("unexpected decision {other:?}"),
                })
                .collect()
        })
        .collect()
}

fn flat(saves: Vec<Vec<String>>) -> Vec<String> {
    saves.into_iter().flatten().collect()
}

#[test]
fn saves_every_epoch_by_default() -> Result<(), String> {
    let (mut cb, subs) = ModelCheckpoint::init(&mut Config::from_pairs(&[])?)?;
    assert_eq!(subs.events(), &[EventKind::EpochEnd]);
    assert_eq!(
        flat(saves(&mut cb, 0, &[1.0, 2.0, 3.0])),
        ["epoch-0000", "epoch-0001", "epoch-0002"]
    );
    assert_eq!(flat(saves(&mut cb, 12345, &[1.0])), ["epoch-12345"]);
    Ok(())
}

#[test]
fn every_n_epochs_saves_at_the_end_of_each_nth_epoch() -> Result<(), String> {
    let mut cb = new(&[("every_n_epochs", "3"), ("tag", "ckpt")])?;
    assert_eq!(
        flat(saves(&mut cb, 0, &[1.0; 9])),
        ["ckpt-0002", "ckpt-0005", "ckpt-0008"]
    );
    Ok(())
}

#[test]
fn save_best_only_saves_on_strict_improvement() -> Result<(), String> {
    let mut cb = new(&[("save_best_only", "true")])?;
    let per_epoch = saves(&mut cb, 0, &[1.0, 0.8, 0.8, 0.9, f64::NAN, 0.5]);
    let saved_at: Vec<usize> = (0..per_epoch.len())
        .filter(|i| !per_epoch[*i].is_empty())
        .collect();
    assert_eq!(saved_at, [0, 1, 5]);
    assert!(per_epoch.iter().flatten().all(|t| t == "best"));
    // Accuracy is maximised.
    let mut cb = new(&[("save_best_only", "true"), ("monitor", "val_accuracy")])?;
    let names = names(&["val_accuracy"]);
    let mut out = Decisions::new();
    for (e, v) in (0u32..).zip([0.5, 0.4, 0.6]) {
        let values = [v];
        cb.on_epoch_end(&EpochMetrics::new(e, 0, &names, &values), &mut out);
    }
    assert_eq!(out.into_vec().len(), 2);
    Ok(())
}

#[test]
fn top_k_rotates_the_worst_slot() -> Result<(), String> {
    let (mut cb, subs) = ModelCheckpoint::init(&mut Config::from_pairs(&[("keep_top_k", "2")])?)?;
    assert!(subs.contains(EventKind::TrainStart));
    // epoch 0 (0.9) -> top-1, epoch 1 (0.8) -> top-2; epoch 2 (0.95) is worse than both;
    // epoch 3 (0.7) replaces the worst, epoch 0 in top-1; epoch 4 (0.75) replaces epoch 1 (0.8)
    // in top-2; epoch 5 (0.76) is worse than both kept (0.7, 0.75).
    let per_epoch = saves(&mut cb, 0, &[0.9, 0.8, 0.95, 0.7, 0.75, 0.76]);
    let expected: Vec<Vec<String>> = [&["top-1"][..], &["top-2"], &[], &["top-1"], &["top-2"], &[]]
        .iter()
        .map(|tags| tags.iter().map(|t| (*t).to_string()).collect())
        .collect();
    assert_eq!(per_epoch, expected);
    let lines = trainrt_guest::log::take_captured();
    assert_eq!(
        lines[2].1,
        "epoch 3: val_loss=0.7000 is among the best 2; saving top-1, replacing epoch 0 (0.9000)"
    );
    Ok(())
}

#[test]
fn snapshot_restore_continues_exactly() -> Result<(), String> {
    for params in [
        &[("keep_top_k", "3")][..],
        &[("save_best_only", "true")],
        &[("every_n_epochs", "2")],
    ] {
        let values = [0.9, 0.8, 0.95, 0.7, 0.75, 0.76, 0.6, 0.85];
        let mut original = new(params)?;
        saves(&mut original, 0, &values[..4]);
        let mut resumed = new(params)?;
        resumed.restore(&original.snapshot())?;
        assert_eq!(resumed, original);
        assert_eq!(
            saves(&mut resumed, 4, &values[4..]),
            saves(&mut original, 4, &values[4..])
        );
    }
    Ok(())
}

#[test]
fn state_from_another_policy_is_refused() -> Result<(), String> {
    let top3 = new(&[("keep_top_k", "3")])?.snapshot();
    let mut top2 = new(&[("keep_top_k", "2")])?;
    assert_eq!(
        top2.restore(&top3).err().as_deref(),
        Some("the saved model-checkpoint state is for keep_top_k=3, not keep_top_k=2")
    );
    let mut best = new(&[("save_best_only", "true")])?;
    assert!(best.restore(&top3).is_err());
    assert!(best.restore(&top3[..top3.len() - 2]).is_err());
    Ok(())
}

#[test]
fn bad_parameters_are_explained() -> Result<(), String> {
    let err = |params: &[(&str, &str)]| new(params).err();
    assert_eq!(
        err(&[("every_n_epochs", "0")]).as_deref(),
        Some("parameter every_n_epochs=0: expected a positive integer")
    );
    assert_eq!(
        err(&[("save_best_only", "true"), ("keep_top_k", "2")]).as_deref(),
        Some(
            "parameters save_best_only=true and keep_top_k=2 exclude each other: keep_top_k=1 \
             keeps only the best"
        )
    );
    assert_eq!(
        err(&[("tag", "my ckpt")]).as_deref(),
        Some(
            "parameter tag=my ckpt: expected letters, digits, '_', '.' and '-' only (not '.' or '..')"
        )
    );
    let long = "x".repeat(54);
    assert_eq!(
        err(&[("tag", &long)]),
        Some(format!(
            "parameter tag={long}: expected at most 53 characters"
        ))
    );
    assert!(new(&[("tag", &long), ("save_best_only", "true")]).is_ok());
    assert_eq!(
        err(&[("keep_top_k", "5000")]).as_deref(),
        Some("parameter keep_top_k=5000: expected an integer from 0 to 1000")
    );
    assert_eq!(
        err(&[("save_best", "true")]).as_deref(),
        Some(
            "unknown parameter 'save_best'; known parameters: monitor, mode, save_best_only, \
             every_n_epochs, keep_top_k, tag"
        )
    );
    Ok(())
}
