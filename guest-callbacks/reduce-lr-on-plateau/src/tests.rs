use super::*;
use trainrt_guest::Decision;
use trainrt_guest::testing::names;

fn new(params: &[(&str, &str)]) -> Result<ReduceLrOnPlateau, String> {
    ReduceLrOnPlateau::init(&mut Config::from_pairs(params)?).map(|(cb, _)| cb)
}

/// A training run in miniature: the callback sees `val_loss` and the current `lr` each epoch,
/// and its decisions change the lr the next epoch reports.
struct Run {
    cb: ReduceLrOnPlateau,
    lr: f64,
    epoch: u32,
}

impl Run {
    fn new(params: &[(&str, &str)], lr: f64) -> Result<Run, String> {
        Ok(Run {
            cb: new(params)?,
            lr,
            epoch: 0,
        })
    }

    /// One epoch with `val_loss`; returns the new lr if the callback set one.
    fn epoch(&mut self, val_loss: f64) -> Option<f64> {
        let names = names(&["loss", "val_loss", "lr"]);
        let values = [0.5, val_loss, self.lr];
        let mut out = Decisions::new();
        self.cb
            .on_epoch_end(&EpochMetrics::new(self.epoch, 0, &names, &values), &mut out);
        self.epoch += 1;
        let set = out.into_vec().into_iter().find_map(|d| match d {
            Decision::SetLearningRate(lr) => Some(lr),
            _ => None,
        });
        if let Some(lr) = set {
            self.lr = lr;
        }
        set
    }

    /// Epochs (counting from 0) at which the lr was reduced, over `values`.
    fn reductions(&mut self, values: &[f64]) -> Vec<u32> {
        let mut at = Vec::new();
        for v in values {
            let e = self.epoch;
            if self.epoch(*v).is_some() {
                at.push(e);
            }
        }
        at
    }
}

#[test]
fn reduces_after_patience_epochs_without_improvement() -> Result<(), String> {
    let mut run = Run::new(&[("patience", "2"), ("factor", "0.5")], 1.0)?;
    assert_eq!(
        run.reductions(&[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
        vec![2, 4, 6]
    );
    assert_eq!(run.lr, 0.125);
    let lines = trainrt_guest::log::take_captured();
    assert_eq!(
        lines[0].1,
        "epoch 2: val_loss did not improve for 2 epochs; reducing learning rate 1.0000 -> 0.5000"
    );
    Ok(())
}

#[test]
fn cooldown_delays_counting_after_a_reduction() -> Result<(), String> {
    // Keras by hand, patience=2, cooldown=2, a flat val_loss of 1.0:
    //   epoch 0: best=1.0, wait=0
    //   epoch 1: wait=1
    //   epoch 2: wait=2 -> reduce, cooldown_counter=2, wait=0
    //   epoch 3: in cooldown: counter 2->1, wait=0; still in cooldown, so no counting
    //   epoch 4: in cooldown: counter 1->0, wait=0; cooldown over, so wait=1
    //   epoch 5: wait=2 -> reduce, counter=2
    //   epoch 6: counter 2->1
    let params = [("patience", "2"), ("factor", "0.5"), ("cooldown", "2")];
    let mut run = Run::new(&params, 1.0)?;
    assert_eq!(run.reductions(&[1.0; 7]), vec![2, 5]);
    assert_eq!(run.lr, 0.25);
    Ok(())
}

#[test]
fn improvements_beyond_min_delta_reset_the_wait() -> Result<(), String> {
    // Each epoch improves by 0.05, more than min_delta=0.01: never reduces.
    let params = [("patience", "1"), ("min_delta", "0.01")];
    let mut run = Run::new(&params, 1.0)?;
    assert!(run.reductions(&[1.0, 0.95, 0.9, 0.85]).is_empty());
    // Improving by less than min_delta counts as no improvement.
    let mut run = Run::new(&[("patience", "1"), ("min_delta", "0.1")], 1.0)?;
    assert_eq!(run.reductions(&[1.0, 0.95]), vec![1]);
    Ok(())
}

#[test]
fn never_goes_below_min_lr() -> Result<(), String> {
    let params = [("patience", "1"), ("min_lr", "0.05")];
    let mut run = Run::new(&params, 0.1)?;
    assert_eq!(run.reductions(&[1.0, 1.0, 1.0, 1.0]), vec![1]);
    assert_eq!(run.lr, 0.05);
    Ok(())
}

#[test]
fn max_mode_for_accuracy() -> Result<(), String> {
    let names = names(&["val_accuracy"]);
    let (mut cb, _) = ReduceLrOnPlateau::init(&mut Config::from_pairs(&[
        ("monitor", "val_accuracy"),
        ("patience", "1"),
    ])?)?;
    cb.on_epoch_start(
        &EpochInfo {
            epoch: 0,
            step: 0,
            lr: 0.2,
        },
        &mut Decisions::new(),
    );
    let mut decisions = Vec::new();
    for (e, v) in (0u32..).zip([0.5, 0.6, 0.55]) {
        let values = [v];
        let mut out = Decisions::new();
        cb.on_epoch_end(&EpochMetrics::new(e, 0, &names, &values), &mut out);
        decisions.push(out.into_vec());
    }
    // No `lr` metric here: the epoch-start lr is used.
    let expected = 0.2 * 0.1;
    assert_eq!(decisions[2], vec![Decision::SetLearningRate(expected)]);
    assert!(decisions[..2].iter().all(Vec::is_empty));
    Ok(())
}

#[test]
fn snapshot_restore_continues_exactly() -> Result<(), String> {
    let params = [("patience", "2"), ("cooldown", "1")];
    let values = [1.0, 1.0, 1.0, 0.9, 1.0, 1.0, 1.0, 1.0, 1.0];
    let mut original = Run::new(&params, 1.0)?;
    original.reductions(&values[..3]);
    let mut resumed = Run::new(&params, original.lr)?;
    resumed.epoch = original.epoch;
    resumed.cb.restore(&original.cb.snapshot())?;
    assert_eq!(resumed.cb, original.cb);
    assert_eq!(
        resumed.reductions(&values[3..]),
        original.reductions(&values[3..])
    );
    assert_eq!(resumed.cb, original.cb);
    assert!(resumed.cb.restore(&[1, 2, 3]).is_err());
    Ok(())
}

#[test]
fn bad_parameters_are_explained() -> Result<(), String> {
    let err = |params: &[(&str, &str)]| new(params).err();
    for bad in ["1", "1.5", "0", "-0.5"] {
        assert_eq!(
            err(&[("factor", bad)]),
            Some(format!(
                "parameter factor={bad}: expected a number between 0 and 1 (exclusive)"
            ))
        );
    }
    assert_eq!(
        err(&[("min_lr", "-1")]).as_deref(),
        Some("parameter min_lr=-1: expected a non-negative number")
    );
    assert_eq!(
        err(&[("cooldow", "1")]).as_deref(),
        Some(
            "unknown parameter 'cooldow'; known parameters: monitor, mode, factor, patience, \
             min_delta, cooldown, min_lr"
        )
    );
    Ok(())
}
