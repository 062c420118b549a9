//! `model-checkpoint`: saves checkpoints every N epochs, when a monitored metric improves, or
//! for the k best epochs.
//!
//! Parameters, with defaults: `monitor=val_loss`, `mode=auto` (auto|min|max),
//! `save_best_only=false`, `every_n_epochs=1`, `keep_top_k=0` (off; at most 1000), `tag` (see
//! below). `save_best_only` and `keep_top_k` exclude each other.
//!
//! Decisions, at `epoch-end` of every `every_n_epochs`-th epoch (epochs N-1, 2N-1, ...: as in
//! Lightning, the interval applies in every policy):
//! - default: `save-checkpoint("{tag}-{epoch:04}")`, `tag` defaulting to `epoch`
//!   (`epoch-0003`);
//! - `save_best_only=true`: `save-checkpoint("{tag}")`, `tag` defaulting to `best`, when the
//!   monitored metric strictly improves on the best so far;
//! - `keep_top_k=k`: keeps the k best epochs in k rotating slots `"{tag}-1"`..`"{tag}-k"`, `tag`
//!   defaulting to `top`. A value better than the worst kept one overwrites the worst one's
//!   slot (an empty slot first). The host has no "delete checkpoint" decision, so rotating tags
//!   is what bounds disk use; slot numbers are not ranks (the log line says which epoch a slot
//!   holds).
//!
//! Epochs whose monitored metric has no value (NaN) are skipped by the monitored policies.

mod policy;

use trainrt_guest::monitor::Monitor;
use trainrt_guest::state::{StateReader, StateWriter};
use trainrt_guest::{
    Callback, Config, Decisions, EpochMetrics, RunInfo, Subscriptions, export_callback,
    format_metric, log, param_error,
};

use policy::{Policy, TopK};

/// Version of the `snapshot` format.
const STATE_VERSION: u8 = 1;

/// Longest tag the host accepts.
const MAX_TAG_LEN: usize = 64;

/// Saves checkpoints periodically, on improvement, or for the top k epochs.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelCheckpoint {
    monitor: Monitor,
    every_n_epochs: u32,
    tag: String,
    policy: Policy,
    /// Whether the missing-metric warning was given (once per process is enough).
    warned_missing: bool,
}

impl Callback for ModelCheckpoint {
    fn init(config: &mut Config) -> Result<(Self, Subscriptions), String> {
        let monitor = Monitor::from_config(config, "val_loss")?;
        let save_best_only = config.bool("save_best_only", false)?;
        let every_n_epochs =
            config.u32_where("every_n_epochs", 1, "a positive integer", |n| n > 0)?;
        // Bounded because every slot is a checkpoint on disk (and memory here).
        let keep_top_k =
            config.u32_where("keep_top_k", 0, "an integer from 0 to 1000", |k| k <= 1000)?;
        let (policy, default_tag, max_suffix) = match (save_best_only, keep_top_k) {
            (true, k) if k > 0 => {
                return Err(format!(
                    "parameters save_best_only=true and keep_top_k={k} exclude each other: \
                     keep_top_k=1 keeps only the best"
                ));
            }
            (true, _) => (Policy::Best(monitor.mode.worst()), "best", 0),
            (false, 0) => (
                Policy::Every,
                "epoch",
                "-".len() + u32::MAX.to_string().len(),
            ),
            (false, k) => (
                Policy::TopK(TopK::new(k)),
                "top",
                "-".len() + k.to_string().len(),
            ),
        };
        let tag = config.str("tag", default_tag)?;
        check_tag(&tag, MAX_TAG_LEN - max_suffix)?;
        config.finish()?;

        let mut subscriptions = Subscriptions::new().epoch_end();
        if !matches!(policy, Policy::Every) {
            subscriptions = subscriptions.train_start();
        }
        let callback = ModelCheckpoint {
            monitor,
            every_n_epochs,
            tag,
            policy,
            warned_missing: false,
        };
        Ok((callback, subscriptions))
    }

    fn on_train_start(&mut self, info: &RunInfo, _out: &mut Decisions) {
        self.monitor.warn_if_unavailable(&info.metric_names);
    }

    fn on_epoch_end(&mut self, m: &EpochMetrics<'_>, out: &mut Decisions) {
        let epoch = m.epoch();
        if (u64::from(epoch) + 1) % u64::from(self.every_n_epochs) != 0 {
            return;
        }
        if matches!(self.policy, Policy::Every) {
            out.save_checkpoint(format!("{}-{epoch:04}", self.tag));
            return;
        }
        let Some(value) = self.monitor.value(m) else {
            if !self.warned_missing {
                self.warned_missing = true;
                log::warn(&format!(
                    "epoch {epoch}: {} has no value; not saving (warned once)",
                    self.monitor.name
                ));
            }
            return;
        };
        let mode = self.monitor.mode;
        match &mut self.policy {
            Policy::Every => {}
            Policy::Best(best) => {
                if mode.improves(value, *best, 0.0) {
                    *best = value;
                    out.save_checkpoint(self.tag.clone());
                }
            }
            Policy::TopK(top) => {
                if let Some((slot, replaced)) = top.offer(mode, value, epoch) {
                    let tag = format!("{}-{}", self.tag, slot + 1);
                    let replacing = match replaced {
                        Some(old) => format!(
                            "replacing epoch {} ({})",
                            old.epoch,
                            format_metric(old.value)
                        ),
                        None => "a free slot".to_string(),
                    };
                    log::info(&format!(
                        "epoch {epoch}: {}={} is among the best {}; saving {tag}, {replacing}",
                        self.monitor.name,
                        format_metric(value),
                        top.len()
                    ));
                    out.save_checkpoint(tag);
                }
            }
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut w = StateWriter::new(STATE_VERSION);
        self.policy.write(&mut w);
        w.finish()
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let mut r = StateReader::new(state, STATE_VERSION)?;
        let policy = self.policy.read_same_shape(&mut r)?;
        r.finish()?;
        self.policy = policy;
        Ok(())
    }
}

/// Checks a tag (prefix) against the host's rule, `[A-Za-z0-9_.-]`, leaving room for the suffix
/// this callback appends.
fn check_tag(tag: &str, max_len: usize) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if !tag.chars().all(allowed) || tag == "." || tag == ".." {
        return Err(param_error(
            "tag",
            tag,
            "letters, digits, '_', '.' and '-' only (not '.' or '..')",
        ));
    }
    if tag.len() > max_len {
        return Err(param_error(
            "tag",
            tag,
            &format!("at most {max_len} characters"),
        ));
    }
    Ok(())
}

export_callback!(ModelCheckpoint);

#[cfg(test)]
mod tests;
