//! Fixed points: an event is delivered, its answers validated into a [`DecisionSet`] and applied
//! in a fixed order. What applying them sets off (a `checkpoint-saved` for each save, a
//! validation for `validate-now`, a `fault` event for each callback fault or failed save) is
//! queued and handled in turn, oldest first, until nothing is left: the loop never re-enters
//! itself, and `decisions.jsonl` lists decisions in the order of the events they answer.

use std::collections::VecDeque;

use super::{Observer, RestoredWeights, Run, TrainError};
use crate::checkpoint::{CallbackState, CheckpointMeta, FORMAT_VERSION};
use crate::contract::{CheckpointInfo, FaultInfo, FaultKind};
use crate::decision::{Attributed, DecisionSet};
use crate::events::{Event, kind_name};
use crate::host::FaultRecord;
use crate::sandbox::Spend;

/// Work a fixed point leaves for after its decisions are applied.
enum FollowUp {
    /// Deliver an event (and apply its answers).
    Deliver(Event),
    /// Run validation now (`validate-now`), then deliver its `validation-end`.
    Validate,
}

impl Run {
    /// A fixed point: delivers `event`, applies the answers, then handles what they set off.
    /// Checkpoints saved on the way are committed at the end, except while an epoch ends: those
    /// go to disk with the epoch's `last`, which `finish_epoch` commits.
    pub(super) fn emit(
        &mut self,
        event: Event,
        observer: &mut dyn Observer,
    ) -> Result<(), TrainError> {
        let commit = !matches!(event, Event::EpochEnd(_) | Event::CheckpointSaved(_));
        self.work_off(VecDeque::from([FollowUp::Deliver(event)]), observer)?;
        if commit {
            self.checkpoints.commit()?;
        }
        Ok(())
    }

    /// Handles queued work, oldest first, including the work it queues in turn.
    fn work_off(
        &mut self,
        mut pending: VecDeque<FollowUp>,
        observer: &mut dyn Observer,
    ) -> Result<(), TrainError> {
        while let Some(next) = pending.pop_front() {
            match next {
                FollowUp::Deliver(event) => self.deliver(&event, &mut pending, observer)?,
                FollowUp::Validate => {
                    if let Some((event, _)) = self.measure_validation()? {
                        pending.push_back(FollowUp::Deliver(event));
                    }
                }
            }
        }
        Ok(())
    }

    /// Delivers one event, records it, its logs and faults, and applies its answers.
    fn deliver(
        &mut self,
        event: &Event,
        pending: &mut VecDeque<FollowUp>,
        observer: &mut dyn Observer,
    ) -> Result<(), TrainError> {
        let (delivered, answers) = self.callbacks.dispatch(event);
        let mut set = DecisionSet::default();
        let (kind, epoch, step) = (event.kind(), event.epoch(), event.step());
        for answer in answers {
            for decision in answer.decisions {
                let policy = &self.config.decisions;
                let tags = self.checkpoints.tags();
                set.add(&answer.callback, kind, epoch, step, decision, policy, tags);
            }
        }
        if delivered {
            self.files.event(event)?;
        }
        // Faults raised while a fault is delivered are recorded but not announced again, so a
        // callback that faults on every fault cannot loop.
        let announce_faults = !matches!(event, Event::Fault(_));
        self.record_logs_and_faults(announce_faults, pending, observer)?;
        if !set.is_empty() {
            self.apply(set, event, pending, observer)?;
            // Applying may have put a callback over a run budget.
            self.record_logs_and_faults(announce_faults, pending, observer)?;
        }
        Ok(())
    }

    /// Writes what callbacks logged and how they faulted; queues a `fault` event per fault.
    fn record_logs_and_faults(
        &mut self,
        announce: bool,
        pending: &mut VecDeque<FollowUp>,
        observer: &mut dyn Observer,
    ) -> Result<(), TrainError> {
        for (callback, line) in self.callbacks.drain_logs() {
            observer.callback_log(&callback, &line);
            self.files.log(&callback, &line)?;
        }
        for fault in self.callbacks.take_faults() {
            observer.callback_fault(&fault);
            self.files.fault(&fault)?;
            if announce {
                pending.push_back(FollowUp::Deliver(Event::Fault(fault_info(&fault))));
            }
        }
        Ok(())
    }

    /// Applies validated decisions in a fixed order: metrics, saves, restore, learning rate,
    /// validation, end of epoch, stop; then records what became of each. Metrics, saves, the
    /// restore and validations are first charged to the run budget of the callback that asked:
    /// one over its budget is rejected (and the callback faults).
    fn apply(
        &mut self,
        mut set: DecisionSet,
        event: &Event,
        pending: &mut VecDeque<FollowUp>,
        observer: &mut dyn Observer,
    ) -> Result<(), TrainError> {
        let (during, epoch, step) = (kind_name(event.kind()), event.epoch(), event.step());
        for metric in std::mem::take(&mut set.metrics) {
            let name = &metric.value.name;
            let spend = Spend::MetricName(name);
            if let Err(reason) = self
                .callbacks
                .charge(&metric.callback, spend, during, epoch, step)
            {
                set.reject(&metric, reason);
                continue;
            }
            let value = crate::events::json_number(metric.value.value);
            self.progress.custom_metrics.insert(name.clone(), value);
        }
        for save in std::mem::take(&mut set.saves) {
            // A checkpoint-saved answer may not save again: that could loop forever.
            if matches!(event, Event::CheckpointSaved(_)) {
                let why = "save-checkpoint is not allowed in answer to checkpoint-saved";
                set.reject(&save, why.into());
                continue;
            }
            let tag = Spend::CheckpointTag {
                tag: &save.value,
                new: !self.checkpoints.tags().contains(&save.value),
            };
            let charged = self
                .callbacks
                .charge(&save.callback, tag, during, epoch, step)
                .and_then(|()| {
                    let spend = Spend::CheckpointSave { epoch };
                    self.callbacks
                        .charge(&save.callback, spend, during, epoch, step)
                });
            if let Err(reason) = charged {
                set.reject(&save, reason);
                continue;
            }
            match self.stage_checkpoint(&save.value) {
                Ok((info, bytes)) => {
                    // The save stands; if it crossed the callback's budget, the callback faults
                    // and its next save is refused.
                    let spend = Spend::CheckpointBytes(bytes);
                    let _ = self
                        .callbacks
                        .charge(&save.callback, spend, during, epoch, step);
                    // `train-end` is the last event a callback sees: a save answering it is not
                    // announced.
                    if !matches!(event, Event::TrainEnd(_)) {
                        pending.push_back(FollowUp::Deliver(Event::CheckpointSaved(info)));
                    }
                }
                Err(e) => {
                    let message = format!("saving failed: {}", crate::error_chain(&e));
                    pending.push_back(self.io_fault(&message));
                    set.reject(&save, message);
                }
            }
        }
        if let Some(restore) = set.restore.take() {
            let spend = Spend::Restore { epoch };
            if let Err(reason) =
                self.callbacks
                    .charge(&restore.callback, spend, during, epoch, step)
            {
                set.reject(&restore, reason);
            } else {
                self.restore(&restore, &mut set, pending)?;
            }
        }
        if let Some(lr) = set.lr.take() {
            self.learner.optimizer.set_lr(lr.value);
        }
        // A validation answering a validation (or the end of training) is not run again.
        if !matches!(event, Event::ValidationEnd(_) | Event::TrainEnd(_)) {
            let mut validate = false;
            for asked in std::mem::take(&mut set.validations) {
                let spend = Spend::Validation { epoch };
                match self
                    .callbacks
                    .charge(&asked.callback, spend, during, epoch, step)
                {
                    Ok(()) => validate = true,
                    Err(reason) => set.reject(&asked, reason),
                }
            }
            if validate {
                pending.push_back(FollowUp::Validate);
            }
        }
        if set.end_epoch {
            self.progress.end_epoch = true;
        }
        if let Some(stop) = set.stop.take()
            && self.progress.stop.is_none()
        {
            // Callbacks often name themselves in their reason already; say it once.
            let own = format!("{}:", stop.callback);
            self.progress.stop = Some(if stop.value.starts_with(&own) {
                stop.value
            } else {
                format!("{own} {}", stop.value)
            });
        }
        let records = set.records();
        observer.decisions(records);
        Ok(self.files.decisions(records)?)
    }

    /// Loads checkpoint `tag`'s weights into the model for decision `restore`; a checkpoint that
    /// cannot be read rejects the decision and sends callbacks an `io-error` fault. Remembered
    /// until the next training step, so the summary can say the run ends on restored weights.
    fn restore(
        &mut self,
        restore: &Attributed<String>,
        set: &mut DecisionSet,
        pending: &mut VecDeque<FollowUp>,
    ) -> Result<(), TrainError> {
        // The checkpoint may still be on its way to disk; a write that failed ends the run.
        self.checkpoints.wait()?;
        let restored = self
            .checkpoints
            .load(&restore.value)
            .map_err(TrainError::from)
            .and_then(|c| {
                self.learner.restore_weights(&c)?;
                Ok(c)
            });
        match restored {
            Ok(checkpoint) => {
                self.progress.restored = Some(RestoredWeights {
                    tag: restore.value.clone(),
                    by: restore.callback.clone(),
                    epochs_completed: checkpoint.meta.epoch,
                    step: checkpoint.meta.step,
                    val_loss: None,
                    val_accuracy: None,
                });
            }
            Err(e) => {
                let message = format!("restoring failed: {}", crate::error_chain(&e));
                pending.push_back(self.io_fault(&message));
                set.reject(restore, message);
            }
        }
        Ok(())
    }

    /// Saves checkpoint `tag` with every callback's state (the caller commits it). With
    /// `announce`, callbacks hear of the save and of any fault taking their states; without (the
    /// final checkpoint, after `train-end`), those faults are only recorded.
    pub(super) fn save_checkpoint(
        &mut self,
        tag: &str,
        observer: &mut dyn Observer,
        announce: bool,
    ) -> Result<(), TrainError> {
        let (info, _) = self.stage_checkpoint(tag)?;
        let mut pending = VecDeque::new();
        self.record_logs_and_faults(announce, &mut pending, observer)?;
        if announce {
            pending.push_back(FollowUp::Deliver(Event::CheckpointSaved(info)));
        }
        self.work_off(pending, observer)
    }

    /// Serializes checkpoint `tag` (model, optimizer, every callback's state) and stages it for
    /// the writer; returns what a `checkpoint-saved` announces, and the file's size.
    fn stage_checkpoint(&mut self, tag: &str) -> Result<(CheckpointInfo, u64), TrainError> {
        let (epoch, step) = (self.progress.epoch, self.progress.step);
        let states = self.callbacks.snapshot_all(epoch, step);
        let meta = CheckpointMeta {
            format_version: FORMAT_VERSION,
            epoch: self.progress.epochs_done,
            step,
            lr: self.learner.lr(),
            model: self.learner.model.describe(),
            optimizer: self.config.optimizer.to_string(),
            seed: self.config.seed,
            callback_states: states
                .into_iter()
                .map(|(name, state)| CallbackState { name, state })
                .collect(),
            extra: serde_json::json!({ "run": self.config.name }),
        };
        let model = self.learner.model.tensors();
        let optimizer = self.learner.optimizer.state_tensors();
        let bytes = self.checkpoints.save(tag, meta, &model, &optimizer)?;
        let info = CheckpointInfo {
            tag: tag.to_string(),
            epoch,
            step,
        };
        Ok((info, bytes))
    }

    /// On resume: gives each callback the state the checkpoint holds for it.
    pub(super) fn restore_callback_states(
        &mut self,
        observer: &mut dyn Observer,
    ) -> Result<(), TrainError> {
        let states = std::mem::take(&mut self.progress.resumed_states);
        if states.is_empty() {
            return Ok(());
        }
        let (epoch, step) = (self.progress.epoch, self.progress.step);
        self.callbacks.restore_all(&states, epoch, step);
        let mut pending = VecDeque::new();
        self.record_logs_and_faults(true, &mut pending, observer)?;
        self.work_off(pending, observer)?;
        Ok(self.checkpoints.commit()?)
    }

    /// A `fault` event for a checkpoint the host could not write or read.
    fn io_fault(&self, message: &str) -> FollowUp {
        FollowUp::Deliver(Event::Fault(FaultInfo {
            kind: FaultKind::IoError,
            message: message.to_string(),
            epoch: self.progress.epoch,
            step: self.progress.step,
        }))
    }
}

/// The `fault` event announcing a callback fault to the other callbacks.
fn fault_info(fault: &FaultRecord) -> FaultInfo {
    FaultInfo {
        kind: FaultKind::CallbackFault,
        message: format!(
            "{} faulted during {} ({}): {}; {}",
            fault.callback, fault.during, fault.kind, fault.message, fault.action
        ),
        epoch: fault.epoch,
        step: fault.step,
    }
}
