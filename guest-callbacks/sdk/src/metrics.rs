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

    /// The `i`-th `(name, value)` pair in the host's order, NaN (no value) included.
    pub fn nth(&self, i: usize) -> Option<(&'a str, f64)> {
        Some((self.names.get(i)?.as_str(), *self.values.get(i)?))
    }

    /// Every `(name, value)` pair in the host's order, NaN (no value) included.
    #[inline]
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, f64)> + 'a {
        self.names
            .iter()
            .map(String::as_str)
            .zip(self.values.iter().copied())
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
}
