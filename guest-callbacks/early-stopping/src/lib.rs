//! `early-stopping`: stops training when a monitored metric has stopped improving, with the exact
//! semantics of Keras 3's `EarlyStopping`.
//!
//! Parameters, with defaults: `monitor=val_loss`, `mode=auto` (auto|min|max), `min_delta=0`,
//! `patience=0`, `baseline=none`, `start_from_epoch=0`, `restore_best=false` (Keras'
//! `restore_best_weights`).
//!
//! Decisions, at `epoch-end`:
//! - `log-metric("early_stopping_wait", wait)` every epoch;
//! - with `restore_best`, `save-checkpoint("early-stopping-best")` whenever the metric improves;
//! - when patience runs out, `restore-checkpoint("early-stopping-best")` (with `restore_best`)
//!   and then `stop-training("early-stopping: val_loss did not improve for 3 epochs (best
//!   0.1234 at epoch 5)")`.
//!
//! At `train-end`, with `restore_best`, `restore-checkpoint("early-stopping-best")` if a best was
//! saved and this callback did not already restore it when stopping (Keras restores the best
//! weights in `on_train_end`). Not after a failed run.
//!
//! An epoch whose metric has no value (NaN: e.g. no validation set) is skipped, as Keras skips
//! a missing metric.

mod rule;

use trainrt_guest::monitor::Monitor;
use trainrt_guest::state::{StateReader, StateWriter};
use trainrt_guest::{
    Callback, Config, Decisions, EpochMetrics, Outcome, RunInfo, Subscriptions, TrainEndInfo,
    export_callback, format_metric,
};

use rule::{Patience, Verdict};

/// The checkpoint tag under which the best weights are saved when `restore_best` is set.
pub const BEST_TAG: &str = "early-stopping-best";

/// The custom metric reporting the patience counter each epoch.
pub const WAIT_METRIC: &str = "early_stopping_wait";

/// Version of the `snapshot` format.
const STATE_VERSION: u8 = 1;

/// Keras' `EarlyStopping`, as a trainrt callback.
#[derive(Debug, Clone, PartialEq)]
pub struct EarlyStopping {
    monitor: Monitor,
    restore_best: bool,
    rule: Patience,
    /// Whether this callback asked to stop (and so already restored the best weights).
    stopped: bool,
}

impl Callback for EarlyStopping {
    fn init(config: &mut Config) -> Result<(Self, Subscriptions), String> {
        let monitor = Monitor::from_config(config, "val_loss")?;
        let min_delta =
            config.f64_where("min_delta", 0.0, "a non-negative number", |d| d >= 0.0)?;
        let patience = config.u32("patience", 0)?;
        let baseline = config.opt_f64("baseline")?;
        let start_from_epoch = config.u32("start_from_epoch", 0)?;
        let restore_best = config.bool("restore_best", false)?;
        config.finish()?;

        let mut subscriptions = Subscriptions::new().train_start().epoch_end();
        if restore_best {
            subscriptions = subscriptions.train_end();
        }
        let rule = Patience::new(
            monitor.mode,
            min_delta,
            patience,
            baseline,
            start_from_epoch,
        );
        let callback = EarlyStopping {
            monitor,
            restore_best,
            rule,
            stopped: false,
        };
        Ok((callback, subscriptions))
    }

    fn on_train_start(&mut self, info: &RunInfo, _out: &mut Decisions) {
        self.monitor.warn_if_unavailable(&info.metric_names);
    }

    fn on_epoch_end(&mut self, m: &EpochMetrics<'_>, out: &mut Decisions) {
        let verdict = match self.monitor.value(m) {
            Some(current) => self.rule.observe(m.epoch(), current),
            None => Verdict::Skipped,
        };
        out.log_metric(WAIT_METRIC, f64::from(self.rule.wait));
        match verdict {
            Verdict::Improved if self.restore_best => out.save_checkpoint(BEST_TAG),
            Verdict::Stop => {
                if self.restore_best && self.rule.has_best {
                    out.restore_checkpoint(BEST_TAG);
                }
                self.stopped = true;
                out.stop(self.stop_reason());
            }
            Verdict::Skipped | Verdict::Improved | Verdict::Waiting => {}
        }
    }

    fn on_train_end(&mut self, info: &TrainEndInfo, out: &mut Decisions) {
        let failed = matches!(info.outcome, Outcome::Failed(_));
        if self.restore_best && self.rule.has_best && !self.stopped && !failed {
            out.restore_checkpoint(BEST_TAG);
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut w = StateWriter::new(STATE_VERSION);
        w.u32(self.rule.wait);
        w.f64(self.rule.best);
        w.u32(self.rule.best_epoch);
        w.bool(self.rule.has_best);
        w.bool(self.stopped);
        w.finish()
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let mut r = StateReader::new(state, STATE_VERSION)?;
        let wait = r.u32()?;
        let best = r.f64()?;
        let best_epoch = r.u32()?;
        let has_best = r.bool()?;
        let stopped = r.bool()?;
        r.finish()?;
        // Assign only once everything parsed, so a bad state leaves the callback untouched.
        self.rule.wait = wait;
        self.rule.best = best;
        self.rule.best_epoch = best_epoch;
        self.rule.has_best = has_best;
        self.stopped = stopped;
        Ok(())
    }
}

impl EarlyStopping {
    fn stop_reason(&self) -> String {
        let rule = &self.rule;
        let target = match rule.baseline {
            Some(b) if !rule.beats_baseline(rule.best) => {
                format!(" on baseline {}", format_metric(b))
            }
            _ => String::new(),
        };
        format!(
            "early-stopping: {} did not improve{target} for {} epoch{} (best {} at epoch {})",
            self.monitor.name,
            rule.wait,
            if rule.wait == 1 { "" } else { "s" },
            format_metric(rule.best),
            rule.best_epoch
        )
    }
}

export_callback!(EarlyStopping);

#[cfg(test)]
mod tests;
