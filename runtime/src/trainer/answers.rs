//! Delivering events and applying the answers: every event goes through [`Run::emit`], which
//! records it, validates the callbacks' decisions and applies them at this fixed point.

use serde_json::json;

use super::{Observer, Run, TrainError, json_num};
use crate::checkpoint::{self, CallbackState, CheckpointMeta};
use crate::contract::{CheckpointInfo, FaultInfo, FaultKind as EventFaultKind};
use crate::decision::DecisionSet;
use crate::events::Event;

impl Run {
    /// Delivers an event, records it if anyone received it, and applies the answers.
    pub(super) fn emit(
        &mut self,
        event: &Event,
        observer: &mut dyn Observer,
    ) -> Result<(), TrainError> {
        let (delivered, answers) = self.host.dispatch(event);
        if delivered {
            self.files.events.append(event)?;
        }
        let mut set = DecisionSet::default();
        for answer in answers {
            for d in answer.decisions {
                set.add(
                    &answer.callback,
                    event.kind(),
                    event.epoch(),
                    event.step(),
                    d,
                    &self.config.decisions,
                    &self.known_tags,
                );
            }
        }
        if !set.is_empty() {
            self.apply(set, event, observer)?;
        }
        self.after_dispatch(observer)?;
        // Checkpoints saved in answer go to the writer now, except an `epoch-end`'s: those wait
        // for the epoch's `last` and go to disk with it, in one group (`finish_epoch` commits).
        // A `checkpoint-saved` is announced from inside a save; the event that caused the save
        // commits it.
        if !matches!(event, Event::EpochEnd(_) | Event::CheckpointSaved(_)) {
            self.writer.commit()?;
        }
        Ok(())
    }

    /// Forwards callback logs and faults; faults are also delivered as `fault` events.
    pub(super) fn after_dispatch(&mut self, observer: &mut dyn Observer) -> Result<(), TrainError> {
        for (callback, line) in self.host.drain_logs() {
            observer.callback_log(&callback, &line);
            self.files.log.append(
                &json!({"callback": &*callback, "level": line.level_name(), "message": line.message}),
            )?;
        }
        let faults = self.host.take_faults();
        for fault in &faults {
            observer.callback_fault(fault);
            self.files.faults.append(fault)?;
        }
        for fault in faults {
            let info = FaultInfo {
                kind: EventFaultKind::CallbackFault,
                message: format!(
                    "{} faulted during {} ({}): {}; {}",
                    fault.callback, fault.during, fault.kind, fault.message, fault.action
                ),
                epoch: fault.epoch,
                step: fault.step,
            };
            // Faults raised while delivering a fault event are recorded but not re-announced,
            // so a callback that faults on every fault cannot loop.
            let (delivered, _) = self.host.dispatch(&Event::Fault(info.clone()));
            if delivered {
                self.files.events.append(&Event::Fault(info))?;
            }
            for f in self.host.take_faults() {
                observer.callback_fault(&f);
                self.files.faults.append(&f)?;
            }
        }
        Ok(())
    }

    /// Applies validated decisions in a fixed order: metrics, saves, restore, learning rate,
    /// validation, end of epoch, stop.
    pub(super) fn apply(
        &mut self,
        mut set: DecisionSet,
        event: &Event,
        observer: &mut dyn Observer,
    ) -> Result<(), TrainError> {
        for (name, value) in std::mem::take(&mut set.metrics) {
            self.custom_metrics.insert(name, json_num(value));
        }
        let saves = std::mem::take(&mut set.saves);
        for save in &saves {
            // A checkpoint-saved answer may not save again: that could loop forever.
            if matches!(event, Event::CheckpointSaved(_)) {
                set.reject(
                    save,
                    "save-checkpoint is not allowed in answer to checkpoint-saved".into(),
                );
                continue;
            }
            // train-end is the last event a callback sees, so a save answering it is not announced.
            let announce = !matches!(event, Event::TrainEnd(_));
            if let Err(e) = self.save_checkpoint(&save.value, observer, announce) {
                set.reject(save, format!("saving failed: {}", crate::error_chain(&e)));
            }
        }
        if let Some(restore) = set.restore.take() {
            // The checkpoint to restore may still be on its way to disk.
            self.writer.wait()?;
            // Even a failed load may have replaced some of the weights.
            self.latest_encoding = None;
            let path = self
                .run_dir
                .join("checkpoints")
                .join(format!("{}.safetensors", restore.value));
            match checkpoint::load(&path)
                .map_err(TrainError::from)
                .and_then(|c| Ok(self.model.load_tensors(&c.model)?))
            {
                Ok(()) => {}
                Err(e) => set.reject(
                    &restore,
                    format!("restoring failed: {}", crate::error_chain(&e)),
                ),
            }
        }
        if let Some(lr) = set.lr.take() {
            self.optimizer.set_lr(lr.value);
        }
        if set.validate_now && !matches!(event, Event::ValidationEnd(_) | Event::TrainEnd(_)) {
            self.validate(observer)?;
        }
        if set.end_epoch {
            self.end_epoch_requested = true;
        }
        if let Some(stop) = set.stop.take()
            && self.stop.is_none()
        {
            // Callbacks often name themselves in their reason already; say it once.
            let own = format!("{}:", stop.callback);
            self.stop = Some(if stop.value.starts_with(&own) {
                stop.value.clone()
            } else {
                format!("{} {}", own, stop.value)
            });
        }
        for record in set.records() {
            self.files.decisions.append(record)?;
        }
        Ok(())
    }

    pub(super) fn take_end_epoch(&mut self) -> bool {
        std::mem::take(&mut self.end_epoch_requested)
    }

    /// Writes a checkpoint with every callback's state and announces it.
    pub(super) fn save_checkpoint(
        &mut self,
        tag: &str,
        observer: &mut dyn Observer,
        announce: bool,
    ) -> Result<(), TrainError> {
        let states = self.host.snapshot_all(self.epoch, self.step);
        let meta = CheckpointMeta {
            format_version: checkpoint::FORMAT_VERSION,
            epoch: self.epochs_done,
            step: self.step,
            lr: self.optimizer.lr(),
            model: self.model.describe(),
            optimizer: self.config.optimizer.clone(),
            seed: self.config.seed,
            callback_states: states
                .into_iter()
                .map(|(name, state)| CallbackState { name, state })
                .collect(),
            extra: json!({ "run": self.config.name }),
        };
        // Serialized here, where the tensors are, unless the same state was just serialized
        // under another tag; written and fsync'd on the writer thread when the caller commits.
        let encoded = match &self.latest_encoding {
            Some((same, encoded)) if *same == meta => encoded.retagged(tag)?,
            _ => checkpoint::encode(
                &self.run_dir.join("checkpoints"),
                tag,
                &meta,
                &self.model.tensors(),
                &self.optimizer.state_tensors(),
            )?,
        };
        self.latest_encoding = Some((meta, encoded.clone()));
        self.writer.stage(encoded);
        self.known_tags.insert(tag.to_string());
        if announce {
            let info = CheckpointInfo {
                tag: tag.to_string(),
                epoch: self.epoch,
                step: self.step,
            };
            self.emit(&Event::CheckpointSaved(info), observer)?;
        }
        Ok(())
    }
}
