//! What `trainrt run` shows: a progress bar on a terminal, plain lines otherwise, or JSON lines
//! on stdout with `--json`.

use std::io::IsTerminal;
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use trainrt::contract::{Level, RunInfo};
use trainrt::host::FaultRecord;
use trainrt::sandbox::LogLine;
use trainrt::trainer::{Observer, RunSummary};

/// The run's console output.
pub struct Console {
    json: bool,
    bar: Option<ProgressBar>,
    epochs: u32,
}

impl Console {
    /// JSON lines on stdout when `json`, else human output on stderr.
    pub fn new(json: bool) -> Self {
        Self {
            json,
            bar: None,
            epochs: 0,
        }
    }

    fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    fn emit_json(&self, value: Value) {
        println!("{value}");
    }

    /// Prints the summary.
    pub fn finish(&mut self, summary: &RunSummary) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if self.json {
            self.emit_json(json!({"type": "summary", "summary": summary}));
            return;
        }
        let reason = summary
            .reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        eprintln!(
            "{} after {} epochs, {} steps{reason}",
            summary.outcome, summary.epochs_completed, summary.steps
        );
        if let Some(m) = summary.final_metrics.as_object() {
            eprintln!("final: {}", format_metrics(m));
        }
        if let Some(w) = &summary.final_weights {
            let measured = match (w.val_loss, w.val_accuracy) {
                (Some(loss), Some(accuracy)) => {
                    format!(": val_loss={loss:.4} val_accuracy={accuracy:.4}")
                }
                _ => String::new(),
            };
            eprintln!(
                "final weights: checkpoint '{}' (after {} epochs, step {}), restored by {} after \
                 the last step{measured}",
                w.tag, w.epochs_completed, w.step, w.by
            );
        }
        for cb in &summary.callbacks {
            let faults: u32 = cb.faults.values().sum();
            eprintln!(
                "callback {:<22} {:>7} calls  {:>9.1} µs mean  {} faults  {} restarts  {}",
                cb.name, cb.stats.calls, cb.mean_time_us, faults, cb.restarts, cb.status
            );
        }
        eprintln!("run directory: {}", summary.run_dir.display());
    }
}

/// An epoch's metrics line as the `logger` callback writes it: every metric with a value (NaN
/// means none this epoch, e.g. without a validation set), formatted alike.
fn format_metrics(m: &serde_json::Map<String, Value>) -> String {
    m.iter()
        .filter(|(k, _)| k.as_str() != "epoch" && k.as_str() != "step")
        .filter_map(|(k, v)| {
            let value = v.as_f64().or_else(|| match v.as_str()? {
                "inf" => Some(f64::INFINITY),
                "-inf" => Some(f64::NEG_INFINITY),
                _ => None,
            })?;
            Some(format!("{k}={}", format_metric(value)))
        })
        .collect::<Vec<_>>()
        .join("  ")
}

/// A metric value as the `logger` callback prints it (the guest SDK's `format_metric`), so the
/// console and the callback agree: 4 decimals in the usual range (`0.0500`), scientific notation
/// for tiny or huge magnitudes (`1.000e-5`).
fn format_metric(v: f64) -> String {
    let magnitude = v.abs();
    if (1e-3..1e6).contains(&magnitude) || v == 0.0 || v.is_infinite() {
        format!("{v:.4}")
    } else {
        format!("{v:.3e}")
    }
}

impl Observer for Console {
    fn started(&mut self, info: &RunInfo, run_dir: &Path) {
        self.epochs = info.epochs;
        if self.json {
            self.emit_json(json!({"type": "start", "run_info": info, "run_dir": run_dir}));
            return;
        }
        eprintln!(
            "training {} ({} parameters) on {}: {} train / {} validation samples, epochs {} to {}, batch {}, {} lr {}",
            info.model,
            info.parameter_count,
            info.dataset,
            info.train_samples,
            info.validation_samples,
            info.start_epoch,
            info.epochs - 1,
            info.batch_size,
            info.optimizer,
            info.initial_lr
        );
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(u64::from(info.batches_per_epoch));
            if let Ok(style) = ProgressStyle::with_template(
                "epoch {prefix} [{bar:30}] {pos}/{len} batches {elapsed_precise}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            self.bar = Some(bar);
        }
    }

    fn batch_done(&mut self, epoch: u32, batch: u32, _batches: u32) {
        if let Some(bar) = &self.bar {
            if batch == 0 {
                bar.reset();
                bar.set_prefix(format!("{epoch}/{}", self.epochs.saturating_sub(1)));
            }
            bar.set_position(u64::from(batch) + 1);
        }
    }

    fn epoch_done(&mut self, epoch: u32, metrics: &Value) {
        if self.json {
            self.emit_json(json!({"type": "epoch", "metrics": metrics}));
        } else if let Some(m) = metrics.as_object() {
            // Epochs are numbered from 0 everywhere (files, events, the logger callback): the
            // last of a 30-epoch run is 29.
            self.line(&format!(
                "epoch {epoch}/{}  {}",
                self.epochs.saturating_sub(1),
                format_metrics(m)
            ));
        }
    }

    fn callback_log(&mut self, callback: &str, line: &LogLine) {
        if self.json {
            let level = line.level_name();
            self.emit_json(json!({"type": "log", "callback": callback, "level": level, "message": line.message}));
            return;
        }
        let tag = match line.level {
            Level::Debug => "debug: ",
            Level::Info => "",
            Level::Warn => "warning: ",
            Level::Error => "error: ",
        };
        self.line(&format!("[{callback}] {tag}{}", line.message));
    }

    fn callback_fault(&mut self, fault: &FaultRecord) {
        if self.json {
            self.emit_json(json!({"type": "fault", "fault": fault}));
            return;
        }
        self.line(&format!(
            "[{}] fault during {} at epoch {} step {}: {}: {} ({})",
            fault.callback,
            fault.during,
            fault.epoch,
            fault.step,
            fault.kind,
            fault.message,
            fault.action
        ));
    }
}
