//! Budgets for a callback's whole run: what it has spent so far against the run-level fields of
//! [`Limits`], and the `budget` fault when it goes over one.
//!
//! The per-call limits bound one call; these bound the sum, so that a callback that stays just
//! inside every per-call limit (90% of its fuel on every call, a new checkpoint tag on every
//! batch) still cannot make a run slow or its directory huge. A budget outlives the callback's
//! instances: a restarted instance carries on where the faulted one stopped.

use std::collections::BTreeSet;
use std::time::Duration;

use super::fault::{CallbackFaultKind, Fault};
use super::limits::Limits;

/// What a callback spends, besides its calls: what applying one of its decisions costs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Spend<'a> {
    /// A save under `tag`; `new` when no checkpoint of the run has that tag yet.
    CheckpointTag {
        /// The tag.
        tag: &'a str,
        /// Whether the save creates a checkpoint file the run did not have.
        new: bool,
    },
    /// A save applied in `epoch` (each one writes and syncs a file, however small).
    CheckpointSave {
        /// The epoch it is saved in.
        epoch: u32,
    },
    /// Bytes of a checkpoint saved at the callback's request.
    CheckpointBytes(u64),
    /// A custom metric logged under `name`.
    MetricName(&'a str),
    /// A `validate-now` applied in `epoch`.
    Validation {
        /// The epoch it runs in.
        epoch: u32,
    },
    /// A `restore-checkpoint` applied in `epoch`.
    Restore {
        /// The epoch it happens in.
        epoch: u32,
    },
}

/// What one callback has spent in its run so far.
#[derive(Debug, Default)]
pub struct RunBudget {
    tags: BTreeSet<String>,
    checkpoint_bytes: u64,
    metric_names: BTreeSet<String>,
    this_epoch: EpochCounts,
    /// Time units (see [`CallTotals::time_units`]) before which the time share cannot have been
    /// exceeded: the next call past them checks it.
    next_time_check: u64,
    /// Set once a budget fault was raised: everything after it is refused without a second fault.
    exhausted: bool,
}

/// What a callback asked for in one epoch.
#[derive(Debug, Default)]
struct EpochCounts {
    epoch: u32,
    saves: u32,
    validations: u32,
    restores: u32,
}

/// A callback's totals over its run, all instances together, for [`RunBudget::check_calls`].
#[derive(Debug, Clone, Copy)]
pub struct CallTotals {
    /// Fuel used, host work included.
    pub fuel: u64,
    /// Decisions returned.
    pub decisions: u64,
    /// Time inside calls, in the caller's clock units: summed cheaply on every call, converted
    /// to a duration only when the time share must be checked.
    pub time_units: u64,
}

impl RunBudget {
    /// Whether a budget fault was already raised for this callback.
    #[cfg(test)]
    fn exhausted(&self) -> bool {
        self.exhausted
    }

    /// Checks the callback's totals after a call. `clock` converts `time_units` into the
    /// callback's time in calls and also tells the run's wall-clock time so far; it is asked only
    /// when the time share could have been exceeded since it was last checked, so most calls
    /// read no clock and convert nothing.
    pub fn check_calls(
        &mut self,
        limits: &Limits,
        totals: CallTotals,
        clock: impl FnOnce(u64) -> (Duration, Duration),
    ) -> Result<(), Fault> {
        if totals.fuel > limits.fuel_per_run {
            return self.over(format!(
                "used {} fuel in this run, over its budget of {} (raise limits.fuel_per_run)",
                totals.fuel, limits.fuel_per_run
            ));
        }
        if totals.decisions > limits.decisions_per_run {
            return self.over(format!(
                "returned {} decisions in this run, over its budget of {} (raise \
                 limits.decisions_per_run)",
                totals.decisions, limits.decisions_per_run
            ));
        }
        if totals.time_units < self.next_time_check {
            return Ok(());
        }
        let (time, run_time) = clock(totals.time_units);
        let share = time.as_secs_f64() / run_time.as_secs_f64().max(f64::MIN_POSITIVE);
        if time > limits.time_grace && share > limits.time_share {
            return self.over(format!(
                "took {:.1} s in its calls, {:.0}% of the run's {:.1} s, over its share of {:.0}% \
                 (raise limits.time_share or limits.time_grace)",
                time.as_secs_f64(),
                share * 100.0,
                run_time.as_secs_f64(),
                limits.time_share * 100.0
            ));
        }
        // The callback's own time is part of the run's, so the earliest it can go over its share
        // is when its time reaches share × (run − time) / (1 − share), and never before the
        // grace: until then there is nothing to check.
        let next = if limits.time_share >= 1.0 {
            f64::INFINITY
        } else {
            let other = (run_time.saturating_sub(time)).as_secs_f64();
            (limits.time_share * other / (1.0 - limits.time_share))
                .max(limits.time_grace.as_secs_f64())
        };
        let units_per_second = totals.time_units as f64 / time.as_secs_f64().max(1e-9);
        let next_units = next * units_per_second;
        self.next_time_check = if next_units >= u64::MAX as f64 {
            u64::MAX
        } else {
            (next_units as u64).max(totals.time_units + 1)
        };
        Ok(())
    }

    /// Charges what applying one decision costs. `Err` means the decision must not be applied:
    /// the callback is over a budget (the first time, the returned fault is to be recorded; after
    /// that, `None`: the callback is already being dealt with).
    pub fn spend(&mut self, limits: &Limits, spend: Spend<'_>) -> Result<(), Option<Fault>> {
        if self.exhausted {
            return Err(None);
        }
        let over = match spend {
            Spend::CheckpointTag { new: false, .. } => Ok(()),
            Spend::CheckpointTag { tag, new: true } => add_distinct(
                &mut self.tags,
                tag,
                limits.checkpoint_tags,
                "a new checkpoint tag",
                "limits.checkpoint_tags",
            ),
            Spend::MetricName(name) => add_distinct(
                &mut self.metric_names,
                name,
                limits.metric_names,
                "a new metric name",
                "limits.metric_names",
            ),
            Spend::CheckpointBytes(bytes) => {
                self.checkpoint_bytes = self.checkpoint_bytes.saturating_add(bytes);
                if self.checkpoint_bytes <= limits.checkpoint_bytes_per_run {
                    Ok(())
                } else {
                    Err(format!(
                        "had {} bytes of checkpoints saved in this run, over its budget of {} \
                         (raise limits.checkpoint_bytes_per_run)",
                        self.checkpoint_bytes, limits.checkpoint_bytes_per_run
                    ))
                }
            }
            Spend::CheckpointSave { epoch } => self.count_in(epoch, |c| &mut c.saves).at_most(
                limits.checkpoint_saves_per_epoch,
                "a checkpoint",
                "limits.checkpoint_saves_per_epoch",
            ),
            Spend::Validation { epoch } => self.count_in(epoch, |c| &mut c.validations).at_most(
                limits.validations_per_epoch,
                "a validation",
                "limits.validations_per_epoch",
            ),
            Spend::Restore { epoch } => self.count_in(epoch, |c| &mut c.restores).at_most(
                limits.restores_per_epoch,
                "a restore",
                "limits.restores_per_epoch",
            ),
        };
        over.or_else(|message| self.over(message)).map_err(Some)
    }

    /// Counts one more request of a kind in `epoch` (the counts start afresh each epoch).
    fn count_in(
        &mut self,
        epoch: u32,
        counter: impl FnOnce(&mut EpochCounts) -> &mut u32,
    ) -> Count {
        if self.this_epoch.epoch != epoch {
            self.this_epoch = EpochCounts {
                epoch,
                ..EpochCounts::default()
            };
        }
        let count = counter(&mut self.this_epoch);
        *count += 1;
        Count {
            count: *count,
            epoch,
        }
    }

    fn over(&mut self, message: String) -> Result<(), Fault> {
        self.exhausted = true;
        Err(Fault::new(CallbackFaultKind::Budget, message))
    }
}

/// How many times a callback asked for something in an epoch, this time included.
struct Count {
    count: u32,
    epoch: u32,
}

impl Count {
    fn at_most(self, limit: u32, what: &str, setting: &str) -> Result<(), String> {
        if self.count <= limit {
            return Ok(());
        }
        Err(format!(
            "asked for {what} {} times in epoch {}, over its budget of {limit} ({setting})",
            self.count, self.epoch
        ))
    }
}

/// Adds `item` to the callback's distinct `set`, unless that would make more than `limit`.
fn add_distinct(
    set: &mut BTreeSet<String>,
    item: &str,
    limit: usize,
    what: &str,
    setting: &str,
) -> Result<(), String> {
    if set.contains(item) {
        return Ok(());
    }
    if set.len() >= limit {
        return Err(format!(
            "asked for {what} '{item}' after {} of them ({setting})",
            set.len()
        ));
    }
    set.insert(item.to_string());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            checkpoint_tags: 2,
            checkpoint_bytes_per_run: 100,
            metric_names: 1,
            validations_per_epoch: 1,
            restores_per_epoch: 1,
            checkpoint_saves_per_epoch: 1,
            fuel_per_run: 1000,
            decisions_per_run: 10,
            time_share: 0.5,
            time_grace: Duration::from_millis(10),
            ..Limits::default()
        }
    }

    fn fault_of(result: Result<(), Option<Fault>>) -> Fault {
        result
            .expect_err("over budget")
            .expect("the first refusal carries the fault")
    }

    #[test]
    fn new_tags_are_counted_once_and_existing_ones_are_free() {
        let l = limits();
        let mut b = RunBudget::default();
        let tag = |tag, new| Spend::CheckpointTag { tag, new };
        assert_eq!(b.spend(&l, tag("a", true)), Ok(()));
        assert_eq!(b.spend(&l, tag("a", true)), Ok(()));
        assert_eq!(b.spend(&l, tag("best", false)), Ok(()));
        assert_eq!(b.spend(&l, tag("b", true)), Ok(()));
        let fault = fault_of(b.spend(&l, tag("c", true)));
        assert_eq!(fault.kind, CallbackFaultKind::Budget);
        assert!(fault.message.contains("'c'"), "{}", fault.message);
        // Once over, everything is refused, without a second fault.
        assert!(b.exhausted());
        assert_eq!(b.spend(&l, tag("a", true)), Err(None));
    }

    #[test]
    fn per_epoch_counters_start_afresh_each_epoch() {
        let l = limits();
        let mut b = RunBudget::default();
        assert_eq!(b.spend(&l, Spend::Validation { epoch: 0 }), Ok(()));
        assert_eq!(b.spend(&l, Spend::Restore { epoch: 0 }), Ok(()));
        assert_eq!(b.spend(&l, Spend::CheckpointSave { epoch: 0 }), Ok(()));
        assert_eq!(b.spend(&l, Spend::CheckpointSave { epoch: 1 }), Ok(()));
        assert_eq!(b.spend(&l, Spend::Validation { epoch: 1 }), Ok(()));
        assert_eq!(b.spend(&l, Spend::Restore { epoch: 1 }), Ok(()));
        let fault = fault_of(b.spend(&l, Spend::Restore { epoch: 1 }));
        assert!(
            fault.message.contains("2 times in epoch 1"),
            "{}",
            fault.message
        );
    }

    #[test]
    fn metric_names_and_checkpoint_bytes() {
        let l = limits();
        let mut b = RunBudget::default();
        assert_eq!(b.spend(&l, Spend::MetricName("x")), Ok(()));
        assert_eq!(b.spend(&l, Spend::MetricName("x")), Ok(()));
        assert_eq!(b.spend(&l, Spend::CheckpointBytes(60)), Ok(()));
        assert_eq!(b.spend(&l, Spend::CheckpointBytes(40)), Ok(()));
        fault_of(b.spend(&l, Spend::CheckpointBytes(1)));
        let mut b = RunBudget::default();
        assert_eq!(b.spend(&l, Spend::MetricName("x")), Ok(()));
        fault_of(b.spend(&l, Spend::MetricName("y")));
    }

    #[test]
    fn call_totals_against_fuel_decisions_and_time_share() {
        let l = limits();
        // Time units are microseconds here.
        let totals = |fuel, decisions, us| CallTotals {
            fuel,
            decisions,
            time_units: us,
        };
        let run_of =
            |run_ms: u64| move |us: u64| (Duration::from_micros(us), Duration::from_millis(run_ms));
        let check = |t| RunBudget::default().check_calls(&l, t, run_of(100));
        assert!(check(totals(1000, 10, 50_000)).is_ok());
        assert!(check(totals(1001, 0, 0)).is_err());
        assert!(check(totals(0, 11, 0)).is_err());
        // All of the run's time so far, but within the grace.
        assert!(
            RunBudget::default()
                .check_calls(&l, totals(0, 0, 9_000), run_of(9))
                .is_ok()
        );
        let err = check(totals(0, 0, 60_000)).unwrap_err();
        assert!(err.message.contains("60% of the run"), "{}", err.message);
    }

    #[test]
    fn the_time_share_is_checked_again_only_when_it_could_have_been_exceeded() {
        let l = limits();
        let mut b = RunBudget::default();
        let totals = |us| CallTotals {
            fuel: 0,
            decisions: 0,
            time_units: us,
        };
        let asked = std::cell::Cell::new(0);
        let clock = |run_ms: u64| {
            let asked = &asked;
            move |us: u64| {
                asked.set(asked.get() + 1);
                (Duration::from_micros(us), Duration::from_millis(run_ms))
            }
        };
        // 1 ms of a 100 ms run at a 50% share: it cannot reach its share before 99 ms of calls.
        assert!(b.check_calls(&l, totals(1_000), clock(100)).is_ok());
        assert!(b.check_calls(&l, totals(98_000), clock(197)).is_ok());
        assert_eq!(asked.get(), 1, "no clock read until it could be over");
        // At 99 ms it is checked again: 99 of 198 ms is not over half.
        assert!(b.check_calls(&l, totals(99_000), clock(198)).is_ok());
        assert_eq!(asked.get(), 2);
        // Past it, once it has more than half of the run's time.
        assert!(b.check_calls(&l, totals(150_000), clock(250)).is_err());
    }
}
