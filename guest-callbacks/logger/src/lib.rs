//! `logger`: writes a readable account of the run to the run log. Makes no decisions.
//!
//! Lines (info unless noted):
//! - train start: run, model and parameter count, dataset and sizes, plan, optimizer, seed, and
//!   where a resumed run starts;
//! - each epoch end: `epoch 3: loss=0.1234 accuracy=0.9600 val_loss=...` (every metric with a
//!   value, in the host's order; metrics with no value this epoch are left out);
//! - each checkpoint saved; each fault (warn);
//! - train end: the outcome (error level if training failed).
//!
//! Parameter, with default: `every_n_batches=0` (off): also log step, loss and learning rate
//! every N-th global step (subscribes to `batch-end` with `batch-every=N`).

use trainrt_guest::{
    BatchMetrics, Callback, CheckpointInfo, Config, Decisions, EpochMetrics, FaultInfo, FaultKind,
    Level, Outcome, RunInfo, Subscriptions, TextWriter, TrainEndInfo, export_callback,
    format_metric, log,
};

/// Logs the run's progress.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Logger {
    /// The per-epoch and per-batch lines are built here, reusing one allocation (not state:
    /// nothing in it outlives the call that wrote it).
    line: String,
}

impl Callback for Logger {
    fn init(config: &mut Config) -> Result<(Self, Subscriptions), String> {
        let every_n_batches = config.u32("every_n_batches", 0)?;
        config.finish()?;
        let mut subscriptions = Subscriptions::new()
            .train_start()
            .epoch_end()
            .checkpoint_saved()
            .train_end()
            .fault();
        if every_n_batches > 0 {
            subscriptions = subscriptions.batch_end_every(every_n_batches);
        }
        Ok((Logger::default(), subscriptions))
    }

    fn on_train_start(&mut self, info: &RunInfo, _out: &mut Decisions) {
        log::info(&train_start_line(info));
    }

    fn on_batch_end(&mut self, m: &BatchMetrics, _out: &mut Decisions) {
        batch_line(&mut self.line, m);
        log::info(&self.line);
    }

    fn on_epoch_end(&mut self, m: &EpochMetrics<'_>, _out: &mut Decisions) {
        epoch_line(&mut self.line, m);
        log::info(&self.line);
    }

    fn on_checkpoint_saved(&mut self, info: &CheckpointInfo, _out: &mut Decisions) {
        log::info(&format!(
            "checkpoint {} saved (epoch {}, step {})",
            info.tag, info.epoch, info.step
        ));
    }

    fn on_train_end(&mut self, info: &TrainEndInfo, _out: &mut Decisions) {
        let (level, what) = match &info.outcome {
            Outcome::Completed => (Level::Info, "completed".to_string()),
            Outcome::Stopped(reason) => (Level::Info, format!("stopped: {reason}")),
            Outcome::Failed(error) => (Level::Error, format!("failed: {error}")),
        };
        log::log(
            level,
            &format!("training {what} (epoch {}, step {})", info.epoch, info.step),
        );
    }

    fn on_fault(&mut self, info: &FaultInfo, _out: &mut Decisions) {
        let kind = match info.kind {
            FaultKind::NonFiniteLoss => "non-finite loss",
            FaultKind::CallbackFault => "callback fault",
            FaultKind::IoError => "I/O error",
        };
        log::warn(&format!(
            "{kind} at epoch {} step {}: {}",
            info.epoch, info.step, info.message
        ));
    }
}

/// `train start: run r1: model mlp(64-128-10) (9610 parameters) on digits (1500 train / 297
/// validation samples); 10 epochs x 100 batches of 15; sgd lr=0.1000; seed 42`.
fn train_start_line(info: &RunInfo) -> String {
    let resuming = if info.start_epoch > 0 || info.start_step > 0 {
        format!(
            "; resuming at epoch {} step {}",
            info.start_epoch, info.start_step
        )
    } else {
        String::new()
    };
    format!(
        "train start: run {}: model {} ({} parameters) on {} ({} train / {} validation samples); \
         {} epochs x {} batches of {}; {} lr={}; seed {}{resuming}",
        info.run_name,
        info.model,
        info.parameter_count,
        info.dataset,
        info.train_samples,
        info.validation_samples,
        info.epochs,
        info.batches_per_epoch,
        info.batch_size,
        info.optimizer,
        format_metric(info.initial_lr),
        info.seed
    )
}

/// `epoch 3: loss=0.1234 accuracy=0.9600 val_loss=0.2000`, into `line`: NaN means "no value
/// this epoch", so such metrics are left out rather than printed as noise.
///
/// Built with a `TextWriter` rather than `format!`: this line is most of the logger's cost per
/// epoch, `core::fmt` is slow in a fuel-metered guest, and the writer keeps the line's length in
/// a register and appends names and numbers with fixed-size stores.
fn epoch_line(line: &mut String, m: &EpochMetrics<'_>) {
    line.clear();
    let mut w = TextWriter::new(line);
    w.push_str("epoch ");
    w.push_uint(u64::from(m.epoch()));
    w.push(':');
    for (name, value) in m.iter().filter(|(_, v)| !v.is_nan()) {
        w.push(' ');
        w.push_str(name);
        w.push('=');
        w.push_metric(value);
    }
}

/// `epoch 3 batch 7 step 307: loss=0.1234 lr=0.1000`, into `line`.
fn batch_line(line: &mut String, m: &BatchMetrics) {
    line.clear();
    let mut w = TextWriter::new(line);
    for (label, n) in [
        ("epoch ", u64::from(m.epoch)),
        (" batch ", u64::from(m.batch)),
        (" step ", m.step),
    ] {
        w.push_str(label);
        w.push_uint(n);
    }
    w.push_str(": loss=");
    w.push_metric(m.loss);
    w.push_str(" lr=");
    w.push_metric(m.lr);
}

export_callback!(Logger);

#[cfg(test)]
mod tests {
    use super::*;
    use trainrt_guest::EventKind;
    use trainrt_guest::log::take_captured;
    use trainrt_guest::testing::{self, names};

    fn new(params: &[(&str, &str)]) -> Result<(Logger, Subscriptions), String> {
        Logger::init(&mut Config::from_pairs(params)?)
    }

    fn lines() -> Vec<String> {
        take_captured().into_iter().map(|(_, l)| l).collect()
    }

    #[test]
    fn epoch_line_lists_metrics_with_values() -> Result<(), String> {
        let (mut cb, _) = new(&[])?;
        let names = names(&["loss", "accuracy", "val_loss", "val_accuracy", "lr"]);
        let values = [0.12344, 0.96, f64::NAN, f64::NAN, 1e-4];
        let mut out = Decisions::new();
        cb.on_epoch_end(&EpochMetrics::new(3, 400, &names, &values), &mut out);
        assert!(out.is_empty());
        assert_eq!(
            lines(),
            ["epoch 3: loss=0.1234 accuracy=0.9600 lr=1.000e-4"]
        );
        Ok(())
    }

    /// The line buffer is reused: each epoch's line holds that epoch's metrics only, also when
    /// it is shorter than the last one.
    #[test]
    fn each_epoch_line_stands_alone() -> Result<(), String> {
        let (mut cb, _) = new(&[])?;
        let names = names(&["loss", "a_much_longer_metric_name_than_usual", "val_loss"]);
        let mut out = Decisions::new();
        cb.on_epoch_end(
            &EpochMetrics::new(0, 10, &names, &[0.5, 123.0, -2e-9]),
            &mut out,
        );
        cb.on_epoch_end(
            &EpochMetrics::new(1, 20, &names, &[0.25, f64::NAN, f64::NAN]),
            &mut out,
        );
        assert_eq!(
            lines(),
            [
                "epoch 0: loss=0.5000 a_much_longer_metric_name_than_usual=123.0000 \
                 val_loss=-2.000e-9",
                "epoch 1: loss=0.2500",
            ]
        );
        Ok(())
    }

    #[test]
    fn train_start_and_end_are_described() -> Result<(), String> {
        let (mut cb, _) = new(&[])?;
        let mut out = Decisions::new();
        cb.on_train_start(&testing::run_info(), &mut out);
        let resumed = RunInfo {
            start_epoch: 4,
            start_step: 400,
            ..testing::run_info()
        };
        cb.on_train_start(&resumed, &mut out);
        cb.on_train_end(
            &TrainEndInfo {
                outcome: Outcome::Stopped("early-stopping: done".into()),
                epoch: 6,
                step: 700,
            },
            &mut out,
        );
        cb.on_train_end(
            &TrainEndInfo {
                outcome: Outcome::Failed("disk full".into()),
                epoch: 6,
                step: 700,
            },
            &mut out,
        );
        let captured = take_captured();
        assert_eq!(
            captured[0].1,
            "train start: run test-run: model mlp(64-128-10) (9610 parameters) on digits \
             (1500 train / 297 validation samples); 10 epochs x 100 batches of 15; sgd \
             lr=0.1000; seed 42"
        );
        assert!(captured[1].1.ends_with("; resuming at epoch 4 step 400"));
        assert_eq!(
            captured[2],
            (
                Level::Info,
                "training stopped: early-stopping: done (epoch 6, step 700)".to_string()
            )
        );
        assert_eq!(
            captured[3],
            (
                Level::Error,
                "training failed: disk full (epoch 6, step 700)".to_string()
            )
        );
        assert!(out.is_empty());
        Ok(())
    }

    #[test]
    fn checkpoints_and_faults_are_logged() -> Result<(), String> {
        let (mut cb, _) = new(&[])?;
        let mut out = Decisions::new();
        let ckpt = CheckpointInfo {
            tag: "best".into(),
            epoch: 2,
            step: 300,
        };
        cb.on_checkpoint_saved(&ckpt, &mut out);
        let fault = FaultInfo {
            kind: FaultKind::NonFiniteLoss,
            message: "loss is NaN".into(),
            epoch: 2,
            step: 310,
        };
        cb.on_fault(&fault, &mut out);
        let captured = take_captured();
        assert_eq!(captured[0].1, "checkpoint best saved (epoch 2, step 300)");
        assert_eq!(
            captured[1],
            (
                Level::Warn,
                "non-finite loss at epoch 2 step 310: loss is NaN".to_string()
            )
        );
        Ok(())
    }

    #[test]
    fn batch_logging_is_off_by_default_and_every_n_when_asked() -> Result<(), String> {
        let (_, off) = new(&[])?;
        assert!(!off.contains(EventKind::BatchEnd));
        let (mut cb, on) = new(&[("every_n_batches", "50")])?;
        assert!(on.contains(EventKind::BatchEnd));
        assert_eq!(on.batch_interval(), 50);
        let m = BatchMetrics {
            epoch: 1,
            batch: 49,
            step: 150,
            loss: 0.5,
            accuracy: 0.8,
            lr: 0.01,
            grad_norm: 2.0,
        };
        cb.on_batch_end(&m, &mut Decisions::new());
        assert_eq!(
            lines(),
            ["epoch 1 batch 49 step 150: loss=0.5000 lr=0.0100"]
        );
        assert_eq!(
            new(&[("every_n_batches", "often")]).err().as_deref(),
            Some("parameter every_n_batches=often: expected a non-negative integer")
        );
        Ok(())
    }
}
