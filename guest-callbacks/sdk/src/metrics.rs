//! Epoch metrics with their names.

/// The metrics of one epoch, by name (the names come from `run-info.metric-names`).
///
/// The host sends NaN for a metric with no value this epoch (e.g. no validation set), so
/// [`EpochMetrics::get`] treats NaN as missing.
#[derive(Debug, Clone, Copy)]
pub struct EpochMetrics<'a> {
    epoch: u32,
    step: u64,
    names: &'a [String],
    values: &'a [f64],
}

impl<'a> EpochMetrics<'a> {
    /// Pairs `values[i]` with `names[i]`; extra values or names are ignored.
    pub fn new(epoch: u32, step: u64, names: &'a [String], values: &'a [f64]) -> Self {
        EpochMetrics {
            epoch,
            step,
            names,
            values,
        }
    }

    /// The epoch that ended (counting from 0).
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The global optimizer step at the end of the epoch.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The value of metric `name`, or `None` if there is no such metric or it has no value
    /// (NaN) this epoch.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .filter(|v| !v.is_nan())
    }

    /// Every `(name, value)` pair in the host's order, NaN (no value) included.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, f64)> + 'a {
        self.names
            .iter()
            .map(String::as_str)
            .zip(self.values.iter().copied())
    }
}

/// Formats a metric value for people: 4 decimals in the usual range (`0.1234`), scientific
/// notation for tiny or huge magnitudes (`1.000e-5`), so learning rates stay readable.
pub fn format_metric(v: f64) -> String {
    let magnitude = v.abs();
    if v == 0.0 || !v.is_finite() || (1e-3..1e6).contains(&magnitude) {
        format!("{v:.4}")
    } else {
        format!("{v:.3e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::names;

    #[test]
    fn get_finds_by_name_and_treats_nan_as_missing() {
        let names = names(&["loss", "val_loss", "lr"]);
        let values = [0.5, f64::NAN, 0.01];
        let m = EpochMetrics::new(3, 120, &names, &values);
        assert_eq!(m.epoch(), 3);
        assert_eq!(m.step(), 120);
        assert_eq!(m.get("loss"), Some(0.5));
        assert_eq!(m.get("val_loss"), None);
        assert_eq!(m.get("accuracy"), None);
        let all: Vec<&str> = m.iter().map(|(n, _)| n).collect();
        assert_eq!(all, ["loss", "val_loss", "lr"]);
    }

    #[test]
    fn format_metric_keeps_small_values_readable() {
        assert_eq!(format_metric(0.123456), "0.1235");
        assert_eq!(format_metric(0.0), "0.0000");
        assert_eq!(format_metric(1e-5), "1.000e-5");
        assert_eq!(format_metric(-2.5e7), "-2.500e7");
        assert_eq!(format_metric(f64::NAN), "NaN");
        assert_eq!(format_metric(f64::INFINITY), "inf");
    }
}
