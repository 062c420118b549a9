//! `reduce-lr-on-plateau`: multiplies the learning rate by `factor` when a monitored metric has
//! stopped improving, with the semantics of Keras 3's `ReduceLROnPlateau`.
//!
//! Parameters, with defaults: `monitor=val_loss`, `mode=auto` (auto|min|max), `factor=0.1`
//! (0 < factor < 1), `patience=10`, `min_delta=1e-4`, `cooldown=0`, `min_lr=0`.
//!
//! Decision, at `epoch-end` when `patience` epochs passed without improvement (outside
//! cooldown) and the current learning rate is above `min_lr`:
//! `set-learning-rate(max(lr * factor, min_lr))`, with an info log line.
//!
//! The current learning rate is the epoch metric `lr` when the run reports one, otherwise the
//! `lr` of the last `epoch-start` (which is why it also subscribes to `epoch-start`).

use trainrt_guest::monitor::Monitor;
use trainrt_guest::state::{StateReader, StateWriter};
use trainrt_guest::{
    Callback, Config, Decisions, EpochInfo, EpochMetrics, RunInfo, Subscriptions, export_callback,
    format_metric, log,
};

/// Version of the `snapshot` format.
const STATE_VERSION: u8 = 1;

/// Keras' `ReduceLROnPlateau`, as a trainrt callback.
#[derive(Debug, Clone, PartialEq)]
pub struct ReduceLrOnPlateau {
    monitor: Monitor,
    factor: f64,
    patience: u32,
    min_delta: f64,
    cooldown: u32,
    min_lr: f64,
    /// Best monitored value so far (starts at the worst possible value, as in Keras).
    best: f64,
    /// Epochs without improvement outside cooldown.
    wait: u32,
    /// Epochs of cooldown left after a reduction.
    cooldown_counter: u32,
    /// The learning rate the current epoch started with; not state, since every epoch (also
    /// after a resume) starts with an `epoch-start`.
    epoch_start_lr: Option<f64>,
}

impl Callback for ReduceLrOnPlateau {
    fn init(config: &mut Config) -> Result<(Self, Subscriptions), String> {
        let monitor = Monitor::from_config(config, "val_loss")?;
        let factor =
            config.f64_where("factor", 0.1, "a number between 0 and 1 (exclusive)", |f| {
                f > 0.0 && f < 1.0
            })?;
        let patience = config.u32("patience", 10)?;
        let min_delta =
            config.f64_where("min_delta", 1e-4, "a non-negative number", |d| d >= 0.0)?;
        let cooldown = config.u32("cooldown", 0)?;
        let min_lr = config.f64_where("min_lr", 0.0, "a non-negative number", |l| l >= 0.0)?;
        config.finish()?;

        let callback = ReduceLrOnPlateau {
            best: monitor.mode.worst(),
            monitor,
            factor,
            patience,
            min_delta,
            cooldown,
            min_lr,
            wait: 0,
            cooldown_counter: 0,
            epoch_start_lr: None,
        };
        let subscriptions = Subscriptions::new().train_start().epoch_start().epoch_end();
        Ok((callback, subscriptions))
    }

    fn on_train_start(&mut self, info: &RunInfo, _out: &mut Decisions) {
        self.monitor.warn_if_unavailable(&info.metric_names);
    }

    fn on_epoch_start(&mut self, info: &EpochInfo, _out: &mut Decisions) {
        self.epoch_start_lr = Some(info.lr);
    }

    fn on_epoch_end(&mut self, m: &EpochMetrics<'_>, out: &mut Decisions) {
        // Keras warns and does nothing when the metric is missing.
        let Some(current) = self.monitor.value(m) else {
            return;
        };
        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.wait = 0;
        }
        if self
            .monitor
            .mode
            .improves(current, self.best, self.min_delta)
        {
            self.best = current;
            self.wait = 0;
            return;
        }
        if self.cooldown_counter > 0 {
            return;
        }
        self.wait = self.wait.saturating_add(1);
        if self.wait < self.patience {
            return;
        }
        let Some(lr) = m.get("lr").or(self.epoch_start_lr) else {
            log::warn("cannot reduce the learning rate: the run reports no current learning rate");
            return;
        };
        // As in Keras, at `min_lr` the counter keeps running without a reduction.
        if lr > self.min_lr {
            let new_lr = (lr * self.factor).max(self.min_lr);
            log::info(&format!(
                "epoch {}: {} did not improve for {} epoch{}; reducing learning rate {} -> {}",
                m.epoch(),
                self.monitor.name,
                self.wait,
                if self.wait == 1 { "" } else { "s" },
                format_metric(lr),
                format_metric(new_lr)
            ));
            out.set_lr(new_lr);
            self.cooldown_counter = self.cooldown;
            self.wait = 0;
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut w = StateWriter::new(STATE_VERSION);
        w.f64(self.best);
        w.u32(self.wait);
        w.u32(self.cooldown_counter);
        w.finish()
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let mut r = StateReader::new(state, STATE_VERSION)?;
        let best = r.f64()?;
        let wait = r.u32()?;
        let cooldown_counter = r.u32()?;
        r.finish()?;
        self.best = best;
        self.wait = wait;
        self.cooldown_counter = cooldown_counter;
        Ok(())
    }
}

export_callback!(ReduceLrOnPlateau);

#[cfg(test)]
mod tests;
