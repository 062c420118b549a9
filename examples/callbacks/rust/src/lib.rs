//! `early-stop`: the example callback that docs/writing-callbacks.md builds in Rust, Python,
//! JavaScript and C. Every language makes byte-for-byte the same decisions.
//!
//! Stops training when `val_loss` has not improved by more than `min_delta` for `patience`
//! epochs. Parameters: `patience` (default 3), `min_delta` (default 0).
//!
//! At every `epoch-end` it logs the custom metric `epochs_since_best`; when patience runs out it
//! also decides `stop-training("early-stop: val_loss did not improve for 3 epochs (best 0.4586 at
//! epoch 10)")` and writes that reason to the run log. An epoch without a `val_loss` value (NaN)
//! changes nothing.
//!
//! State (what `snapshot-state` returns, 18 bytes): version byte 1, then little-endian
//! `wait: u32`, `best: f64`, `best_epoch: u32`, `has_best: bool`.

use trainrt_guest::state::{StateReader, StateWriter};
use trainrt_guest::{
    Callback, Config, Decisions, EpochMetrics, Subscriptions, export_callback, log,
};

/// The custom metric logged every epoch.
pub const METRIC: &str = "epochs_since_best";
/// The monitored metric.
pub const MONITOR: &str = "val_loss";
const STATE_VERSION: u8 = 1;

/// The callback's parameters and counters.
#[derive(Debug, Clone, PartialEq)]
pub struct EarlyStop {
    patience: u32,
    min_delta: f64,
    /// Epochs since the best value.
    wait: u32,
    best: f64,
    best_epoch: u32,
    has_best: bool,
}

impl Callback for EarlyStop {
    fn init(config: &mut Config) -> Result<(Self, Subscriptions), String> {
        let patience = config.u32("patience", 3)?;
        let min_delta =
            config.f64_where("min_delta", 0.0, "a non-negative number", |d| d >= 0.0)?;
        // Rejects unknown keys: "unknown parameter 'x'; known parameters: patience, min_delta".
        config.finish()?;
        let callback = EarlyStop {
            patience,
            min_delta,
            wait: 0,
            best: f64::INFINITY,
            best_epoch: 0,
            has_best: false,
        };
        // The SDK adds train-start itself, to pair epoch-end values with metric names.
        Ok((callback, Subscriptions::new().train_start().epoch_end()))
    }

    fn on_epoch_end(&mut self, m: &EpochMetrics<'_>, out: &mut Decisions) {
        let mut stop = false;
        if let Some(current) = m.get(MONITOR) {
            if !self.has_best || current < self.best - self.min_delta {
                self.best = current;
                self.best_epoch = m.epoch();
                self.has_best = true;
                self.wait = 0;
            } else {
                self.wait = self.wait.saturating_add(1);
                stop = self.wait >= self.patience;
            }
        }
        out.log_metric(METRIC, f64::from(self.wait));
        if stop {
            let reason = format!(
                "early-stop: {MONITOR} did not improve for {} epoch{} (best {:.4} at epoch {})",
                self.wait,
                if self.wait == 1 { "" } else { "s" },
                self.best,
                self.best_epoch
            );
            log::info(&reason);
            out.stop(reason);
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut w = StateWriter::new(STATE_VERSION);
        w.u32(self.wait);
        w.f64(self.best);
        w.u32(self.best_epoch);
        w.bool(self.has_best);
        w.finish()
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let mut r = StateReader::new(state, STATE_VERSION)?;
        let wait = r.u32()?;
        let best = r.f64()?;
        let best_epoch = r.u32()?;
        let has_best = r.bool()?;
        r.finish()?;
        // Assign only once everything parsed, so a bad state leaves the callback untouched.
        (self.wait, self.best, self.best_epoch, self.has_best) = (wait, best, best_epoch, has_best);
        Ok(())
    }
}

export_callback!(EarlyStop);

#[cfg(test)]
mod tests {
    use super::*;
    use trainrt_guest::{Decision, Metric};

    fn start(pairs: &[(&str, &str)]) -> Result<EarlyStop, String> {
        EarlyStop::init(&mut Config::from_pairs(pairs)?).map(|(c, _)| c)
    }

    fn epoch(cb: &mut EarlyStop, epoch: u32, val_loss: f64) -> Vec<Decision> {
        let names = vec!["loss".to_string(), MONITOR.to_string()];
        let values = [1.0, val_loss];
        let mut out = Decisions::new();
        cb.on_epoch_end(&EpochMetrics::new(epoch, 0, &names, &values), &mut out);
        out.into_vec()
    }

    fn wait(n: f64) -> Decision {
        Decision::LogMetric(Metric {
            name: METRIC.into(),
            value: n,
        })
    }

    #[test]
    fn stops_after_patience_epochs_without_improvement() -> Result<(), String> {
        let mut cb = start(&[("patience", "2")])?;
        assert_eq!(epoch(&mut cb, 0, 0.5), [wait(0.0)]);
        assert_eq!(epoch(&mut cb, 1, f64::NAN), [wait(0.0)]);
        assert_eq!(epoch(&mut cb, 2, 0.6), [wait(1.0)]);
        let reason = "early-stop: val_loss did not improve for 2 epochs (best 0.5000 at epoch 0)";
        assert_eq!(
            epoch(&mut cb, 3, 0.5),
            [wait(2.0), Decision::StopTraining(reason.into())]
        );
        Ok(())
    }

    #[test]
    fn rejects_unknown_and_bad_parameters() {
        assert_eq!(
            start(&[("patiense", "3")]).err().as_deref(),
            Some("unknown parameter 'patiense'; known parameters: patience, min_delta")
        );
        assert_eq!(
            start(&[("min_delta", "-1")]).err().as_deref(),
            Some("parameter min_delta=-1: expected a non-negative number")
        );
    }

    #[test]
    fn state_round_trips() -> Result<(), String> {
        let mut cb = start(&[])?;
        epoch(&mut cb, 0, 0.5);
        epoch(&mut cb, 1, 0.7);
        let mut fresh = start(&[])?;
        fresh.restore(&cb.snapshot())?;
        assert_eq!(fresh, cb);
        assert!(fresh.restore(&[1, 2]).is_err());
        Ok(())
    }
}
