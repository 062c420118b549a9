//! Keras 3's `EarlyStopping.on_epoch_end` rule, as plain state and arithmetic.

use trainrt_guest::monitor::Mode;

/// What one epoch's value meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Not counted: before `start_from_epoch` (missing values never reach the rule).
    Skipped,
    /// A new best.
    Improved,
    /// No improvement, patience not yet exhausted.
    Waiting,
    /// Patience exhausted: stop.
    Stop,
}

/// The patience counter and best value, updated once per epoch.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Patience {
    mode: Mode,
    /// Always >= 0; the direction comes from `mode` (Keras negates it for `min`).
    min_delta: f64,
    patience: u32,
    pub(crate) baseline: Option<f64>,
    start_from_epoch: u32,
    /// Epochs since the last improvement that also beat the baseline.
    pub(crate) wait: u32,
    /// Best value so far; starts at the worst possible value (Keras: `None`, which any value
    /// improves on).
    pub(crate) best: f64,
    pub(crate) best_epoch: u32,
    /// Whether `best` holds a real value.
    pub(crate) has_best: bool,
}

impl Patience {
    pub(crate) fn new(
        mode: Mode,
        min_delta: f64,
        patience: u32,
        baseline: Option<f64>,
        start_from_epoch: u32,
    ) -> Self {
        Patience {
            mode,
            min_delta,
            patience,
            baseline,
            start_from_epoch,
            wait: 0,
            best: mode.worst(),
            best_epoch: 0,
            has_best: false,
        }
    }

    /// Whether `value` improves on the baseline (true when there is none).
    pub(crate) fn beats_baseline(&self, value: f64) -> bool {
        self.baseline
            .is_none_or(|b| self.mode.improves(value, b, self.min_delta))
    }

    /// Keras' rule for one epoch with monitored value `current`.
    pub(crate) fn observe(&mut self, epoch: u32, current: f64) -> Verdict {
        if epoch < self.start_from_epoch {
            return Verdict::Skipped;
        }
        self.wait = self.wait.saturating_add(1);
        // Keras compares with `best = None` as "always an improvement"; `has_best` keeps that
        // exact even for an infinite first value, which would not improve on the +-inf start.
        if !self.has_best || self.mode.improves(current, self.best, self.min_delta) {
            self.best = current;
            self.best_epoch = epoch;
            self.has_best = true;
            // Only restart waiting if we beat both the baseline and our previous best: an
            // improving run that never reaches the baseline keeps counting (but, as in Keras,
            // an improving epoch never stops training).
            if self.beats_baseline(current) {
                self.wait = 0;
            }
            return Verdict::Improved;
        }
        // Keras never stops at epoch 0.
        if self.wait >= self.patience && epoch > 0 {
            Verdict::Stop
        } else {
            Verdict::Waiting
        }
    }
}
