//! `lr-schedule`: sets the learning rate from a fixed schedule, per epoch or per step, with an
//! optional linear warmup.
//!
//! Parameters, with defaults:
//! - `schedule=step`: `step` (`base * gamma^floor(t / step_size)`), `exponential`
//!   (`base * gamma^t`), `cosine` (half a cosine from `base` to `min_lr` at `t_max`) or
//!   `constant` (`base`; with warmup: warm up, then hold);
//! - `per=epoch`: `t` counts epochs (rate set at `epoch-start`) or, with `per=step`, global
//!   steps (rate set at `batch-start`, every step);
//! - `step_size=10` (step only): epochs or steps between decays;
//! - `gamma` (step and exponential): decay factor, > 0; default 0.1 for step, 0.95 for
//!   exponential;
//! - `t_max` (cosine only): where the cosine reaches `min_lr`, counted from the start of
//!   training; default: the planned run, `epochs` (or `epochs * batches_per_epoch` steps);
//! - `min_lr=0`: floor of the rate after warmup;
//! - `warmup=0`: epochs or steps of linear warmup from `base * warmup_start_factor` up to
//!   `base`; the schedule's own `t` starts when warmup ends;
//! - `warmup_start_factor=0.1`: in (0, 1].
//!
//! `base` is `run-info.initial-lr`. Decision: `set-learning-rate(lr)`, only when the scheduled
//! rate differs from the current one (per epoch: the `lr` the epoch starts with; per step: the
//! rate this callback last set, kept in its state). A rate that is not > 0 (cosine or decay down
//! to `min_lr=0`) is never sent: the last valid rate stays, with one warning.

mod schedule;

use trainrt_guest::state::{StateReader, StateWriter};
use trainrt_guest::{
    BatchInfo, Callback, Config, Decisions, EpochInfo, RunInfo, Subscriptions, export_callback,
    format_metric, log, param_error,
};

use schedule::{Schedule, Shape};

/// Version of the `snapshot` format.
const STATE_VERSION: u8 = 1;

/// Whether `t` counts epochs or global steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Per {
    Epoch,
    Step,
}

/// A fixed learning-rate schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct LrSchedule {
    schedule: Schedule,
    per: Per,
    /// `run-info.initial-lr`; `None` until `train-start`.
    base_lr: Option<f64>,
    /// Per step: the rate last sent (batch-start carries no rate to compare with).
    last_set: Option<f64>,
    /// Whether the "rate is not positive" warning was given.
    warned_zero: bool,
}

impl Callback for LrSchedule {
    fn init(config: &mut Config) -> Result<(Self, Subscriptions), String> {
        let kind = config.choice(
            "schedule",
            "step",
            &["step", "exponential", "cosine", "constant"],
        )?;
        let per = match config.choice("per", "epoch", &["epoch", "step"])? {
            "step" => Per::Step,
            _ => Per::Epoch,
        };
        let step_size = config.u64("step_size", 10)?;
        if step_size == 0 {
            return Err(param_error("step_size", 0, "a positive integer"));
        }
        let default_gamma = if kind == "exponential" { 0.95 } else { 0.1 };
        let gamma = config.f64_where("gamma", default_gamma, "a positive number", |g| g > 0.0)?;
        let t_max = config.opt_positive_u64("t_max")?;
        let min_lr = config.f64_where("min_lr", 0.0, "a non-negative number", |l| l >= 0.0)?;
        let warmup = config.u64("warmup", 0)?;
        let warmup_start_factor =
            config.f64_where("warmup_start_factor", 0.1, "a number in (0, 1]", |f| {
                f > 0.0 && f <= 1.0
            })?;
        config.finish()?;

        // A parameter the chosen schedule ignores is almost certainly a mistake.
        let used_by: &[(&str, &[&str])] = &[
            ("step_size", &["step"]),
            ("gamma", &["step", "exponential"]),
            ("t_max", &["cosine"]),
        ];
        for (key, schedules) in used_by {
            if config.is_set(key) && !schedules.contains(&kind) {
                return Err(format!(
                    "parameter {key} is not used by schedule={kind} (only by {})",
                    schedules.join(", ")
                ));
            }
        }

        let shape = match kind {
            "step" => Shape::Step { step_size, gamma },
            "exponential" => Shape::Exponential { gamma },
            "cosine" => Shape::Cosine { t_max },
            _ => Shape::Constant,
        };
        let callback = LrSchedule {
            schedule: Schedule {
                shape,
                min_lr,
                warmup,
                warmup_start_factor,
            },
            per,
            base_lr: None,
            last_set: None,
            warned_zero: false,
        };
        let subscriptions = Subscriptions::new().train_start();
        let subscriptions = match per {
            Per::Epoch => subscriptions.epoch_start(),
            Per::Step => subscriptions.batch_start(),
        };
        Ok((callback, subscriptions))
    }

    fn on_train_start(&mut self, info: &RunInfo, _out: &mut Decisions) {
        self.base_lr = Some(info.initial_lr);
        if let Shape::Cosine {
            t_max: t_max @ None,
        } = &mut self.schedule.shape
        {
            let planned = match self.per {
                Per::Epoch => u64::from(info.epochs),
                Per::Step => u64::from(info.epochs) * u64::from(info.batches_per_epoch),
            };
            *t_max = Some(planned);
        }
        // A fresh run starts at the initial rate: nothing to send at step 0. On resume the rate
        // last sent comes from the restored state instead.
        if self.last_set.is_none() && info.start_step == 0 {
            self.last_set = Some(info.initial_lr);
        }
    }

    fn on_epoch_start(&mut self, info: &EpochInfo, out: &mut Decisions) {
        if let Some(lr) = self.scheduled(u64::from(info.epoch))
            && !same_rate(lr, info.lr)
        {
            out.set_lr(lr);
        }
    }

    fn on_batch_start(&mut self, info: &BatchInfo, out: &mut Decisions) {
        if let Some(lr) = self.scheduled(info.step)
            && self.last_set.is_none_or(|last| !same_rate(lr, last))
        {
            out.set_lr(lr);
            self.last_set = Some(lr);
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut w = StateWriter::new(STATE_VERSION);
        w.opt_f64(self.last_set);
        w.finish()
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let mut r = StateReader::new(state, STATE_VERSION)?;
        let last_set = r.opt_f64()?;
        r.finish()?;
        self.last_set = last_set;
        Ok(())
    }
}

impl LrSchedule {
    /// The rate for `t`, if it is one the host accepts (finite, > 0); `None` before
    /// `train-start`.
    fn scheduled(&mut self, t: u64) -> Option<f64> {
        let lr = self.schedule.lr_at(self.base_lr?, t);
        if lr.is_finite() && lr > 0.0 {
            return Some(lr);
        }
        if !self.warned_zero {
            self.warned_zero = true;
            let unit = match self.per {
                Per::Epoch => "epoch",
                Per::Step => "step",
            };
            log::warn(&format!(
                "the schedule reaches learning rate {} at {unit} {t}; keeping the last valid \
                 rate (set min_lr > 0 to avoid this)",
                format_metric(lr)
            ));
        }
        None
    }
}

/// Equal up to float noise: the host may have stored or converted the rate we sent.
fn same_rate(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
}

export_callback!(LrSchedule);

#[cfg(test)]
mod tests;
