//! A run's configuration: what `train.toml` and the command line describe, validated before the
//! trainer sees it, and saved as the run directory's `config.json` so `--resume` can rebuild it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::callback::CallbackOptions;
use crate::data::DataSpec;
use crate::decision::DecisionPolicy;
use crate::device::DeviceSpec;
use crate::model::ModelSpec;
use crate::optim::OptimizerSpec;

mod sandbox_flags;

pub use sandbox_flags::apply_sandbox_flags;

/// Errors in a configuration: the user's to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML for a run.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said.
        message: String,
    },
    /// A value is out of range or malformed.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The setting, as named in the config file and flags.
        field: &'static str,
        /// What is wrong and what is expected.
        message: String,
    },
}

/// Everything that defines a run. Defaults are the README's demo: an MLP on the embedded digits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Run name; the run directory defaults to `runs/<name>`.
    pub name: String,
    /// `mlp`, `mlp:256,128` or `cnn`.
    #[serde(with = "as_text")]
    pub model: ModelSpec,
    /// `digits`, `csv:PATH` or `synthetic:samples=N,features=F,classes=C`.
    #[serde(with = "as_text")]
    pub data: DataSpec,
    /// Epochs to train (in total, counting epochs before a resume).
    pub epochs: u32,
    /// Samples per batch.
    pub batch_size: u32,
    /// Initial learning rate.
    pub lr: f64,
    /// `sgd[:momentum=M,weight_decay=W,nesterov=B]` or
    /// `adamw[:beta1=B1,beta2=B2,eps=E,weight_decay=W]`.
    #[serde(with = "as_text")]
    pub optimizer: OptimizerSpec,
    /// Seed for initialisation, split and batch order.
    pub seed: u64,
    /// `cpu`, `cuda` or `cuda:N`.
    #[serde(with = "as_text")]
    pub device: DeviceSpec,
    /// Fraction of the data held out for validation.
    pub val_fraction: f64,
    /// Write the `last` checkpoint every this many epochs (it is always written at the end).
    pub checkpoint_every: u32,
    /// Write the training loss and learning rate to TensorBoard every this many steps (0: the
    /// epoch metrics only).
    pub log_every: u32,
    /// Bounds on callbacks' decisions.
    pub decisions: DecisionPolicy,
    /// Callbacks, in delivery order.
    pub callbacks: Vec<CallbackOptions>,
}

impl Default for TrainConfig {
    /// An MLP (64-128-10) on digits: 30 epochs, batch 32, SGD with lr 0.05 and momentum 0.9,
    /// seed 42, on the CPU, 20% held out for validation, no callbacks.
    fn default() -> Self {
        Self {
            name: "digits-mlp".into(),
            model: ModelSpec::default(),
            data: DataSpec::Digits,
            epochs: 30,
            batch_size: 32,
            lr: 0.05,
            optimizer: OptimizerSpec::Sgd {
                momentum: 0.9,
                weight_decay: 0.0,
                nesterov: false,
            },
            seed: 42,
            device: DeviceSpec::Cpu,
            val_fraction: 0.2,
            checkpoint_every: 1,
            log_every: 10,
            decisions: DecisionPolicy::default(),
            callbacks: Vec::new(),
        }
    }
}

impl TrainConfig {
    /// Reads a TOML config file; settings it leaves out keep their defaults.
    pub fn from_toml_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Checks every setting, so a typo fails now with a clear message rather than mid-run.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, message: String| Err(ConfigError::Invalid { field, message });
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return invalid(
                "name",
                format!(
                    "'{}' must be non-empty and use only [A-Za-z0-9_.-]",
                    self.name
                ),
            );
        }
        if self.epochs == 0 {
            return invalid("epochs", "must be at least 1".into());
        }
        if self.batch_size == 0 {
            return invalid("batch-size", "must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return invalid("lr", format!("{} is not a finite number > 0", self.lr));
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return invalid(
                "val-fraction",
                format!("{} must be in [0, 1)", self.val_fraction),
            );
        }
        if self.checkpoint_every == 0 {
            return invalid("checkpoint-every", "must be at least 1".into());
        }
        let p = &self.decisions;
        if !(p.min_lr > 0.0 && p.min_lr <= p.max_lr && p.max_lr.is_finite()) {
            return invalid(
                "decisions",
                format!(
                    "need 0 < min_lr <= max_lr < inf, got [{}, {}]",
                    p.min_lr, p.max_lr
                ),
            );
        }
        Ok(())
    }

    /// Adds a callback with default options, as `--callback SPEC` does.
    pub fn push_callback(&mut self, spec: &str) -> Result<(), ConfigError> {
        self.callbacks.push(callback_options(spec)?);
        Ok(())
    }
}

/// Parses `--callback SPEC` into a callback with default options.
pub fn callback_options(spec: &str) -> Result<CallbackOptions, ConfigError> {
    spec.parse()
        .map(CallbackOptions::new)
        .map_err(|e: crate::callback::CallbackError| ConfigError::Invalid {
            field: "callback",
            message: e.to_string(),
        })
}

/// Settings written as text (`"sgd:momentum=0.9"`) in config files and `config.json`, parsed into
/// their typed form once, on reading.
mod as_text {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<T: Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let text = String::deserialize(d)?;
        text.parse().map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_overrides_defaults_and_rejects_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.toml");
        std::fs::write(
            &path,
            "epochs = 5\nlr = 0.01\n[[callbacks]]\nspec = \"early-stopping:patience=2\"\non_fault = \"abort\"\n[callbacks.limits]\ncall_timeout = 50\n",
        )
        .unwrap();
        let c = TrainConfig::from_toml_file(&path).unwrap();
        use crate::callback::FaultPolicy;
        use crate::sandbox::Limits;
        assert_eq!((c.epochs, c.lr, c.batch_size), (5, 0.01, 32));
        assert_eq!(c.callbacks[0].on_fault, FaultPolicy::Abort);
        assert_eq!(
            c.callbacks[0].limits.call_timeout,
            std::time::Duration::from_millis(50)
        );
        assert_eq!(
            c.callbacks[0].limits.memory_bytes,
            Limits::default().memory_bytes
        );
        c.validate().unwrap();

        std::fs::write(&path, "epochz = 5\n").unwrap();
        let e = TrainConfig::from_toml_file(&path).unwrap_err().to_string();
        assert!(e.contains("epochz"), "{e}");
    }

    #[test]
    fn sandbox_flags_set_options_by_name_with_units() {
        use crate::callback::FaultPolicy;
        use crate::sandbox::Limits;
        let mut c = TrainConfig::default();
        c.push_callback("logger").unwrap();
        c.push_callback("examples/py/stopper.wasm:patience=3")
            .unwrap();
        apply_sandbox_flags(
            &mut c.callbacks,
            &[
                "call_timeout=2s,memory_bytes=16MiB".into(),
                "stopper:inert_wasi=true,fuel_per_call=1_000,on_fault=abort".into(),
            ],
        )
        .unwrap();
        let (logger, stopper) = (&c.callbacks[0], &c.callbacks[1]);
        assert_eq!(
            logger.limits.call_timeout,
            std::time::Duration::from_secs(2)
        );
        assert_eq!(stopper.limits.memory_bytes, 16 << 20);
        assert!(stopper.inert_wasi && !logger.inert_wasi);
        assert_eq!(stopper.limits.fuel_per_call, 1000);
        assert_eq!(logger.limits.fuel_per_call, Limits::default().fuel_per_call);
        assert_eq!(stopper.on_fault, FaultPolicy::Abort);

        let bad: [(&str, &str); 5] = [
            ("nobody:fuel_per_call=1", "no callback named 'nobody'"),
            ("memory_bytes=lots", "expected a size"),
            ("call_timeout=0ms", "expected a duration"),
            ("logger:fule=1", "unknown key 'fule'"),
            ("logger:fuel_per_call", "not key=value"),
        ];
        for (flag, expected) in bad {
            let e = apply_sandbox_flags(&mut c.callbacks, &[flag.into()])
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("invalid sandbox") && e.contains(expected),
                "{flag}: {e}"
            );
        }
    }

    #[test]
    fn validation_names_the_bad_setting() {
        type Mutation = fn(&mut TrainConfig);
        let cases: [(Mutation, &str); 3] = [
            (|c| c.epochs = 0, "epochs"),
            (|c| c.lr = -1.0, "lr"),
            (|c| c.checkpoint_every = 0, "checkpoint-every"),
        ];
        for (mutate, field) in cases {
            let mut c = TrainConfig::default();
            mutate(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.starts_with(&format!("invalid {field}")), "{e}");
        }
        let e = TrainConfig::default().push_callback("nope").unwrap_err();
        assert!(e.to_string().starts_with("invalid callback"), "{e}");
    }

    #[test]
    fn typed_settings_are_parsed_once_when_read_and_written_back_as_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.toml");
        let bad: [(&str, &str); 4] = [
            ("optimizer = \"adam2\"", "expected `sgd"),
            ("model = \"transformer\"", "expected `mlp`"),
            ("device = \"tpu\"", "expected cpu, cuda or cuda:N"),
            (
                "[[callbacks]]\nspec = \"nope\"",
                "neither a bundled callback",
            ),
        ];
        for (line, expected) in bad {
            std::fs::write(&path, line).unwrap();
            let e = TrainConfig::from_toml_file(&path).unwrap_err().to_string();
            assert!(e.contains(expected), "{line}: {e}");
        }
        let mut c = TrainConfig {
            model: "mlp:64,32".parse().unwrap(),
            data: "synthetic:samples=100,features=4,classes=3"
                .parse()
                .unwrap(),
            ..TrainConfig::default()
        };
        c.push_callback("early-stopping:patience=2").unwrap();
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["model"], "mlp:64,32");
        assert_eq!(json["optimizer"], "sgd:momentum=0.9");
        assert_eq!(json["device"], "cpu");
        assert_eq!(json["callbacks"][0]["spec"], "early-stopping:patience=2");
        let back: TrainConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back, c);
    }
}
