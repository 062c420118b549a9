//! The learning rate as a pure function of the epoch or step: no history, so a resumed run
//! computes the same rates as an uninterrupted one.

use std::f64::consts::PI;

/// The shape of the schedule after warmup.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Shape {
    /// `base * gamma^floor(t / step_size)` (PyTorch `StepLR`).
    Step { step_size: u64, gamma: f64 },
    /// `base * gamma^t` (PyTorch `ExponentialLR`).
    Exponential { gamma: f64 },
    /// Half a cosine from `base` down to `min_lr`, reached at `t_max` (PyTorch
    /// `CosineAnnealingLR`); `None` until `train-start` supplies the planned length.
    Cosine { t_max: Option<u64> },
    /// `base`: with warmup, "warm up, then hold".
    Constant,
}

/// A complete schedule: warmup, then a shape floored at `min_lr`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Schedule {
    pub(crate) shape: Shape,
    pub(crate) min_lr: f64,
    /// Length of the linear warmup, in epochs or steps.
    pub(crate) warmup: u64,
    /// Warmup starts at `base * warmup_start_factor`.
    pub(crate) warmup_start_factor: f64,
}

impl Schedule {
    /// The learning rate at epoch or step `t` (counting from 0) for base rate `base`.
    ///
    /// During warmup the rate rises linearly from `base * warmup_start_factor` at `t = 0` towards
    /// `base`, reached at `t = warmup`; the shape then runs on `t - warmup`, so a step schedule's
    /// first decay comes `step_size` after warmup ends. `min_lr` floors the rate after warmup.
    pub(crate) fn lr_at(&self, base: f64, t: u64) -> f64 {
        if t < self.warmup {
            let progress = t as f64 / self.warmup as f64;
            let s = self.warmup_start_factor;
            return base * (s + (1.0 - s) * progress);
        }
        let t = t - self.warmup;
        let lr = match self.shape {
            Shape::Step { step_size, gamma } => base * gamma.powf((t / step_size) as f64),
            Shape::Exponential { gamma } => base * gamma.powf(t as f64),
            Shape::Cosine { t_max } => {
                // `t_max` counts from the start of training, warmup included, so the cosine
                // ends where the user (or the planned run length) says; at least one step long.
                let length = t_max.unwrap_or(1).saturating_sub(self.warmup).max(1);
                if t >= length {
                    self.min_lr
                } else {
                    let cos = (PI * t as f64 / length as f64).cos();
                    self.min_lr + (base - self.min_lr) * (1.0 + cos) / 2.0
                }
            }
            Shape::Constant => base,
        };
        lr.max(self.min_lr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(shape: Shape) -> Schedule {
        Schedule {
            shape,
            min_lr: 0.0,
            warmup: 0,
            warmup_start_factor: 0.1,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1e-300)
    }

    fn assert_values(s: &Schedule, expected: &[(u64, f64)]) {
        for (t, lr) in expected {
            let got = s.lr_at(0.1, *t);
            assert!(close(got, *lr), "t={t}: got {got}, expected {lr}");
        }
    }

    #[test]
    fn step_decays_by_gamma_every_step_size() {
        let s = schedule(Shape::Step {
            step_size: 10,
            gamma: 0.1,
        });
        assert_values(
            &s,
            &[(0, 0.1), (9, 0.1), (10, 0.01), (19, 0.01), (25, 0.001)],
        );
    }

    #[test]
    fn exponential_decays_every_unit() {
        let s = schedule(Shape::Exponential { gamma: 0.5 });
        assert_values(&s, &[(0, 0.1), (1, 0.05), (3, 0.0125)]);
    }

    #[test]
    fn cosine_reaches_min_lr_at_t_max_and_stays() {
        let mut s = schedule(Shape::Cosine { t_max: Some(10) });
        s.min_lr = 0.001;
        let half = 0.001 + (0.1 - 0.001) / 2.0;
        let at_2 = 0.001 + (0.1 - 0.001) * (1.0 + (PI * 2.0 / 10.0).cos()) / 2.0;
        assert_values(
            &s,
            &[(0, 0.1), (2, at_2), (5, half), (10, 0.001), (1000, 0.001)],
        );
    }

    #[test]
    fn constant_holds_the_base_rate() {
        assert_values(&schedule(Shape::Constant), &[(0, 0.1), (1_000_000, 0.1)]);
    }

    #[test]
    fn warmup_ramps_linearly_then_the_shape_starts() {
        let mut s = schedule(Shape::Step {
            step_size: 10,
            gamma: 0.1,
        });
        s.warmup = 5;
        // 0.1 * (0.1 + 0.9 * t / 5)
        assert_values(
            &s,
            &[
                (0, 0.01),
                (1, 0.028),
                (4, 0.082),
                (5, 0.1),
                (14, 0.1),
                (15, 0.01),
            ],
        );
        // Cosine with warmup ends at t_max counted from the start: halfway at t = 10.
        let mut c = schedule(Shape::Cosine { t_max: Some(15) });
        c.warmup = 5;
        assert_values(&c, &[(5, 0.1), (10, 0.05), (15, 0.0)]);
    }

    #[test]
    fn min_lr_floors_every_shape_after_warmup() {
        let mut s = schedule(Shape::Exponential { gamma: 0.5 });
        s.min_lr = 0.02;
        assert_values(&s, &[(1, 0.05), (2, 0.025), (3, 0.02), (60, 0.02)]);
    }
}
