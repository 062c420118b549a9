//! The monitored metric and its direction, shared by callbacks that watch for improvement.

use std::cell::Cell;

use crate::{Config, EpochMetrics};

/// Whether a smaller or a larger value of the monitored metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Smaller is better (losses, errors).
    Min,
    /// Larger is better (accuracies, AUC).
    Max,
}

impl Mode {
    /// Keras' `mode=auto` rule: `Max` if the metric name (without a `val_` prefix) ends with
    /// `acc`, `accuracy` or `auc`, or starts with `fmeasure`; otherwise `Min`.
    pub fn auto(monitor: &str) -> Mode {
        let name = monitor.strip_prefix("val_").unwrap_or(monitor);
        let higher_is_better = ["acc", "accuracy", "auc"]
            .iter()
            .any(|suffix| name.ends_with(suffix))
            || name.starts_with("fmeasure");
        if higher_is_better {
            Mode::Max
        } else {
            Mode::Min
        }
    }

    /// Whether `current` improves on `reference` by more than `min_delta` (which must be >= 0):
    /// `current < reference - min_delta` for `Min`, `current > reference + min_delta` for `Max`.
    /// False if either value is NaN.
    pub fn improves(self, current: f64, reference: f64, min_delta: f64) -> bool {
        match self {
            Mode::Min => current < reference - min_delta,
            Mode::Max => current > reference + min_delta,
        }
    }

    /// The starting "best" value, which any real value improves on: `+inf` for `Min`.
    pub fn worst(self) -> f64 {
        match self {
            Mode::Min => f64::INFINITY,
            Mode::Max => f64::NEG_INFINITY,
        }
    }

    /// `"min"` or `"max"`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Min => "min",
            Mode::Max => "max",
        }
    }
}

/// The metric a callback watches (parameter `monitor`) and which way is better (`mode`).
#[derive(Debug, Clone)]
pub struct Monitor {
    /// The metric's name in `run-info.metric-names`, e.g. `val_loss`.
    pub name: String,
    /// Which way is better.
    pub mode: Mode,
    /// Where `name` was found in the last epoch's metrics: the host sends the same names in the
    /// same order all run, so every later epoch checks one name instead of searching.
    position: Cell<Option<usize>>,
}

/// Two monitors are equal when they watch the same metric the same way, wherever they last
/// found it.
impl PartialEq for Monitor {
    fn eq(&self, other: &Self) -> bool {
        (&self.name, self.mode) == (&other.name, other.mode)
    }
}

impl Monitor {
    /// Reads parameters `monitor` (default `default_metric`) and `mode` (`auto|min|max`,
    /// default `auto`, resolved with [`Mode::auto`]).
    pub fn from_config(config: &mut Config, default_metric: &str) -> Result<Monitor, String> {
        let name = config.str("monitor", default_metric)?;
        let mode = match config.choice("mode", "auto", &["auto", "min", "max"])? {
            "min" => Mode::Min,
            "max" => Mode::Max,
            _ => Mode::auto(&name),
        };
        Ok(Monitor::new(name, mode))
    }

    /// Watches metric `name`, `mode` being better.
    pub fn new(name: impl Into<String>, mode: Mode) -> Monitor {
        Monitor {
            name: name.into(),
            mode,
            position: Cell::new(None),
        }
    }

    /// This epoch's value of the monitored metric, if it has one.
    pub fn value(&self, metrics: &EpochMetrics<'_>) -> Option<f64> {
        let cached = self
            .position
            .get()
            .and_then(|i| metrics.nth(i))
            .filter(|(name, _)| *name == self.name);
        let (i, value) = match cached {
            Some((_, value)) => (self.position.get(), value),
            None => {
                let found = metrics
                    .iter()
                    .enumerate()
                    .find(|(_, (n, _))| *n == self.name);
                match found {
                    Some((i, (_, value))) => (Some(i), value),
                    None => return None,
                }
            }
        };
        self.position.set(i);
        (!value.is_nan()).then_some(value)
    }

    /// Warns (once, at train start) when the run has no metric of this name: the callback would
    /// silently never act. `metric_names` is `run-info.metric-names`.
    pub fn warn_if_unavailable(&self, metric_names: &[String]) {
        if !metric_names.contains(&self.name) {
            crate::log::warn(&format!(
                "monitored metric '{}' is not available; available metrics: {}",
                self.name,
                metric_names.join(", ")
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::take_captured;

    #[test]
    fn auto_mode_follows_keras() {
        for max in [
            "accuracy",
            "val_accuracy",
            "val_acc",
            "auc",
            "val_auc",
            "fmeasure",
            "val_fmeasure_macro",
        ] {
            assert_eq!(Mode::auto(max), Mode::Max, "{max}");
        }
        for min in ["loss", "val_loss", "mse", "val_mae", "accuracy_gap", "lr"] {
            assert_eq!(Mode::auto(min), Mode::Min, "{min}");
        }
    }

    #[test]
    fn improvement_respects_min_delta_and_direction() {
        assert!(Mode::Min.improves(0.8, 1.0, 0.1));
        assert!(!Mode::Min.improves(0.9, 1.0, 0.1));
        assert!(Mode::Max.improves(1.2, 1.0, 0.1));
        assert!(!Mode::Max.improves(1.1, 1.0, 0.1));
        assert!(Mode::Min.improves(1e9, Mode::Min.worst(), 0.0));
        assert!(Mode::Max.improves(-1e9, Mode::Max.worst(), 0.0));
        assert!(!Mode::Min.improves(f64::NAN, 1.0, 0.0));
    }

    #[test]
    fn from_config_reads_monitor_and_mode() -> Result<(), String> {
        let mut c = Config::from_pairs(&[("monitor", "val_accuracy")])?;
        let m = Monitor::from_config(&mut c, "val_loss")?;
        assert_eq!(m.mode, Mode::Max);
        let mut c = Config::from_pairs(&[("monitor", "val_accuracy"), ("mode", "min")])?;
        assert_eq!(Monitor::from_config(&mut c, "val_loss")?.mode, Mode::Min);
        let mut c = Config::from_pairs(&[])?;
        let m = Monitor::from_config(&mut c, "val_loss")?;
        assert_eq!((m.name.as_str(), m.mode), ("val_loss", Mode::Min));
        Ok(())
    }

    #[test]
    fn value_follows_the_names_even_when_they_move() {
        let m = Monitor::new("val_loss", Mode::Min);
        let names: Vec<String> = ["loss", "accuracy", "val_loss"].map(String::from).into();
        for epoch in 0..3 {
            let values = [0.5, 0.9, 0.25 + f64::from(epoch)];
            let metrics = EpochMetrics::new(epoch, 10, &names, &values);
            assert_eq!(m.value(&metrics), Some(0.25 + f64::from(epoch)));
        }
        // Other names, other order: found again, not read from the old position.
        let moved: Vec<String> = ["val_loss", "loss"].map(String::from).into();
        assert_eq!(
            m.value(&EpochMetrics::new(3, 20, &moved, &[0.125, 0.5])),
            Some(0.125)
        );
        assert_eq!(
            m.value(&EpochMetrics::new(4, 30, &moved, &[f64::NAN, 0.5])),
            None
        );
        let gone: Vec<String> = ["loss"].map(String::from).into();
        assert_eq!(m.value(&EpochMetrics::new(5, 40, &gone, &[0.5])), None);
        assert_eq!(
            m.value(&EpochMetrics::new(6, 50, &names, &[0.5, 0.9, 0.75])),
            Some(0.75)
        );
    }

    #[test]
    fn missing_metric_is_warned_about() {
        let m = Monitor::new("val_los", Mode::Min);
        m.warn_if_unavailable(&["loss".into(), "val_loss".into()]);
        let lines = take_captured();
        assert_eq!(lines.len(), 1);
        assert_eq!(
            lines[0].1,
            "monitored metric 'val_los' is not available; available metrics: loss, val_loss"
        );
    }
}
