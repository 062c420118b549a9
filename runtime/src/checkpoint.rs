//! Checkpoints: one safetensors file per checkpoint holding the model, the optimizer state and
//! the run's metadata, written with one atomic rename so a crash never leaves them out of sync.
//!
//! Layout of `<dir>/<tag>.safetensors`:
//! - tensors `model.<param>` (from [`crate::model::Model::tensors`]) and `optim.<state>` (from
//!   [`crate::optim::Optimizer::state_tensors`]), stored as CPU little-endian data;
//! - `__metadata__["trainrt"]`: the [`CheckpointMeta`] as JSON (not the tag: that is the file's
//!   name, so one state saved under two tags is the same bytes);
//! - `__metadata__["trainrt.crc32"]`: a CRC-32 over the metadata JSON and every tensor's name,
//!   dtype, shape and bytes (in name order), so a flipped bit anywhere is reported as corruption.
//!
//! The file is the whole checkpoint: nothing beside it can disagree with it after a crash, and
//! one fsync'd file per save is what keeps saving every epoch cheap. `trainrt checkpoint FILE`
//! prints the metadata (any safetensors reader shows it too).

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::safetensors::Load;
use candle_core::{Device, Tensor};
use safetensors::tensor::SafeTensors;

use crate::rundir::{RunDirError, atomic_write_all};

mod encoding;
mod meta;
mod writer;

use encoding::{CpuTensor, checksum, to_cpu};
pub use meta::{CallbackState, CheckpointMeta};
pub use writer::Writer;

/// The checkpoint format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// The safetensors metadata key holding [`CheckpointMeta`] as JSON.
pub const METADATA_KEY: &str = "trainrt";

/// The safetensors metadata key holding the checksum.
const CHECKSUM_KEY: &str = "trainrt.crc32";

/// Errors saving or loading a checkpoint; each names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The tag cannot name a checkpoint.
    #[error("invalid checkpoint tag `{tag}`: {reason}")]
    InvalidTag {
        /// The tag as given.
        tag: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// A file or directory operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done, e.g. "cannot read checkpoint".
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Writing the checkpoint failed.
    #[error(transparent)]
    Write(#[from] RunDirError),
    /// The checkpoint could not be encoded (e.g. a non-finite learning rate in the metadata).
    #[error("cannot encode checkpoint {path}: {reason}")]
    Encode {
        /// The file that was to be written.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file is not a readable checkpoint (truncated, damaged, or not safetensors).
    #[error("checkpoint {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file is valid safetensors but has no trainrt metadata.
    #[error("{path} is not a trainrt checkpoint: no `{}` metadata", METADATA_KEY)]
    MissingMetadata {
        /// The file.
        path: PathBuf,
    },
    /// The checkpoint was written by an incompatible format version.
    #[error(
        "checkpoint {path} has format version {found}; this build reads version {}",
        FORMAT_VERSION
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u64,
    },
    /// A tensor cannot be saved (duplicate name or unsupported dtype) or converted.
    #[error("cannot save or load tensor `{name}` in {path}: {reason}")]
    Tensor {
        /// The file.
        path: PathBuf,
        /// The tensor name in the file.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

/// A checkpoint read back from disk; all tensors are on the CPU.
#[derive(Debug)]
pub struct LoadedCheckpoint {
    /// The file it came from.
    pub path: PathBuf,
    /// Its tag: the file's name without `.safetensors`.
    pub tag: String,
    /// Its metadata.
    pub meta: CheckpointMeta,
    /// Model parameters, without the `model.` prefix (for [`crate::model::Model::load_tensors`]).
    pub model: HashMap<String, Tensor>,
    /// Optimizer state, without the `optim.` prefix (for [`crate::optim::Optimizer::load_state`]).
    pub optimizer: HashMap<String, Tensor>,
}

/// Checks that `tag` can name a checkpoint file: 1 to 64 characters from `[A-Za-z0-9_.-]`, not
/// starting with `.` (so never `.`, `..` or a hidden file) and never a path.
pub fn validate_tag(tag: &str) -> Result<(), String> {
    if tag.is_empty() || tag.len() > 64 {
        return Err(format!(
            "must be 1 to 64 characters long, not {}",
            tag.len()
        ));
    }
    if let Some(c) = tag
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!(
            "character {c:?} is not allowed; use letters, digits, `_`, `.` and `-`"
        ));
    }
    if tag.starts_with('.') {
        return Err("must not start with `.`".into());
    }
    Ok(())
}

/// The path of checkpoint `tag` in `dir`, after checking the tag.
pub fn checkpoint_path(dir: &Path, tag: &str) -> Result<PathBuf, CheckpointError> {
    validate_tag(tag).map_err(|reason| CheckpointError::InvalidTag {
        tag: tag.to_string(),
        reason,
    })?;
    Ok(dir.join(format!("{tag}.safetensors")))
}

/// Writes checkpoint `tag` into `dir` (created if missing) and returns its path: [`encode`],
/// then [`Encoded::write`].
pub fn save(
    dir: &Path,
    tag: &str,
    meta: &CheckpointMeta,
    model_tensors: &[(String, Tensor)],
    optim_tensors: &[(String, Tensor)],
) -> Result<PathBuf, CheckpointError> {
    encode(dir, tag, meta, model_tensors, optim_tensors)?.write()
}

/// A checkpoint serialized in memory, ready to be written (here or on a [`Writer`] thread).
/// Cloning shares the bytes.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// The checkpoint's tag.
    pub tag: String,
    path: PathBuf,
    bytes: Arc<Vec<u8>>,
}

impl Encoded {
    /// The same checkpoint under another tag in the same directory, sharing the bytes: the tag
    /// is the file's name, not part of its content.
    pub fn retagged(&self, tag: &str) -> Result<Encoded, CheckpointError> {
        let dir = self.path.parent().unwrap_or(Path::new(""));
        Ok(Encoded {
            tag: tag.to_string(),
            path: checkpoint_path(dir, tag)?,
            bytes: Arc::clone(&self.bytes),
        })
    }

    /// Writes the checkpoint into its directory (created if missing) and returns its path. The
    /// file is renamed into place atomically, as in [`write_all`].
    pub fn write(self) -> Result<PathBuf, CheckpointError> {
        write_all(std::slice::from_ref(&self))?;
        Ok(self.path)
    }
}

/// Writes checkpoints as one group: each is written beside its target and fsync'd, then all are
/// renamed into place in order, then the directory is synced once (see [`atomic_write_all`]). A
/// crash leaves each checkpoint the previous one or the new one, whole; nothing is renamed unless
/// every file was written, and the error names the file that failed.
pub fn write_all(group: &[Encoded]) -> Result<(), CheckpointError> {
    let mut dirs: Vec<&Path> = Vec::with_capacity(1);
    for checkpoint in group {
        if let Some(dir) = checkpoint.path.parent()
            && !dirs.contains(&dir)
        {
            std::fs::create_dir_all(dir).map_err(|source| CheckpointError::Io {
                action: "cannot create checkpoint directory",
                path: dir.to_path_buf(),
                source,
            })?;
            dirs.push(dir);
        }
    }
    let files: Vec<(&Path, &[u8])> = group
        .iter()
        .map(|c| (c.path.as_path(), c.bytes.as_slice()))
        .collect();
    Ok(atomic_write_all(&files)?)
}

/// Serializes checkpoint `tag` for `dir`: everything but the I/O, so it can run where the
/// tensors are while the write happens elsewhere.
pub fn encode(
    dir: &Path,
    tag: &str,
    meta: &CheckpointMeta,
    model_tensors: &[(String, Tensor)],
    optim_tensors: &[(String, Tensor)],
) -> Result<Encoded, CheckpointError> {
    let path = checkpoint_path(dir, tag)?;
    let meta = CheckpointMeta {
        format_version: FORMAT_VERSION,
        ..meta.clone()
    };
    let unencodable = |reason: String| CheckpointError::Encode {
        path: path.clone(),
        reason,
    };
    if !meta.lr.is_finite() {
        // JSON has no NaN or infinity; serde_json would write `null` and the load would fail.
        return Err(unencodable(format!(
            "learning rate {} is not finite",
            meta.lr
        )));
    }
    let meta_json = serde_json::to_string(&meta).map_err(|e| unencodable(e.to_string()))?;

    let mut tensors: Vec<(String, CpuTensor)> =
        Vec::with_capacity(model_tensors.len() + optim_tensors.len());
    let prefixed = model_tensors
        .iter()
        .map(|(n, t)| ("model.", n, t))
        .chain(optim_tensors.iter().map(|(n, t)| ("optim.", n, t)));
    let mut seen = HashSet::new();
    for (prefix, name, t) in prefixed {
        let name = format!("{prefix}{name}");
        if !seen.insert(name.clone()) {
            return Err(CheckpointError::Tensor {
                path: path.clone(),
                name,
                reason: "the name is used twice".into(),
            });
        }
        let cpu = to_cpu(&path, &name, t)?;
        tensors.push((name, cpu));
    }
    let crc = checksum(
        &meta_json,
        tensors
            .iter()
            .map(|(n, t)| (n.as_str(), t.dtype, t.shape.as_slice(), t.bytes.as_slice())),
    );
    let metadata = header_metadata(meta_json, crc);
    let bytes = safetensors::tensor::serialize(
        tensors.iter().map(|(n, t)| (n.as_str(), t)),
        Some(metadata),
    )
    .map_err(|e| unencodable(e.to_string()))?;
    Ok(Encoded {
        tag: tag.to_string(),
        path,
        bytes: Arc::new(bytes),
    })
}

/// The header's metadata map, iterating `trainrt` before `trainrt.crc32`. safetensors writes the
/// map in its iteration order, which each `HashMap` draws at random; fixing it makes one state's
/// checkpoint the same bytes every time, so equal checkpoints are found equal (and stored once).
/// Each try draws a new order, so this takes two on average; after 64 the order is left as is,
/// which only costs that sharing.
fn header_metadata(meta_json: String, crc: String) -> HashMap<String, String> {
    let entries = [(METADATA_KEY, meta_json), (CHECKSUM_KEY, crc)];
    let build = || HashMap::from(entries.clone().map(|(k, v)| (k.to_string(), v)));
    (0..64)
        .map(|_| build())
        .find(|map| map.keys().next().map(String::as_str) == Some(METADATA_KEY))
        .unwrap_or_else(build)
}

/// Reads and verifies the checkpoint at `path`.
pub fn load(path: &Path) -> Result<LoadedCheckpoint, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io {
        action: "cannot read checkpoint",
        path: path.to_path_buf(),
        source,
    })?;
    let corrupt = |reason: String| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let st = SafeTensors::deserialize(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let info = header.metadata().as_ref();
    let meta_json =
        info.and_then(|m| m.get(METADATA_KEY))
            .ok_or_else(|| CheckpointError::MissingMetadata {
                path: path.to_path_buf(),
            })?;
    let value: serde_json::Value = serde_json::from_str(meta_json)
        .map_err(|e| corrupt(format!("metadata is not JSON: {e}")))?;
    match value
        .get("format_version")
        .and_then(serde_json::Value::as_u64)
    {
        Some(v) if v == u64::from(FORMAT_VERSION) => {}
        Some(found) => {
            return Err(CheckpointError::UnsupportedVersion {
                path: path.to_path_buf(),
                found,
            });
        }
        None => return Err(corrupt("metadata has no format_version".into())),
    }
    let meta: CheckpointMeta =
        serde_json::from_value(value).map_err(|e| corrupt(format!("bad metadata: {e}")))?;

    let views = st.tensors();
    let expected = info
        .and_then(|m| m.get(CHECKSUM_KEY))
        .ok_or_else(|| corrupt("no checksum".into()))?;
    let actual = checksum(
        meta_json,
        views
            .iter()
            .map(|(n, v)| (n.as_str(), v.dtype(), v.shape(), v.data())),
    );
    if *expected != actual {
        return Err(corrupt(format!(
            "checksum mismatch (stored {expected}, computed {actual})"
        )));
    }

    let mut model_tensors = HashMap::new();
    let mut optim_tensors = HashMap::new();
    for (name, view) in &views {
        let tensor = view
            .load(&Device::Cpu)
            .map_err(|e| CheckpointError::Tensor {
                path: path.to_path_buf(),
                name: name.clone(),
                reason: e.to_string(),
            })?;
        if let Some(rest) = name.strip_prefix("model.") {
            model_tensors.insert(rest.to_string(), tensor);
        } else if let Some(rest) = name.strip_prefix("optim.") {
            optim_tensors.insert(rest.to_string(), tensor);
        } else {
            return Err(corrupt(format!(
                "unexpected tensor `{name}` (expected model.* or optim.*)"
            )));
        }
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tag = name
        .strip_suffix(".safetensors")
        .unwrap_or(&name)
        .to_string();
    Ok(LoadedCheckpoint {
        path: path.to_path_buf(),
        tag,
        meta,
        model: model_tensors,
        optimizer: optim_tensors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;
    use safetensors::tensor::Dtype;

    fn meta() -> CheckpointMeta {
        CheckpointMeta {
            format_version: 0,
            epoch: 3,
            step: 1234,
            lr: 0.05,
            model: "mlp(64-128-10)".into(),
            optimizer: "sgd:momentum=0.9,weight_decay=0.0,nesterov=false".into(),
            seed: 42,
            callback_states: vec![
                CallbackState {
                    name: "early-stop".into(),
                    state: vec![0, 1, 0xab, 0xff],
                },
                CallbackState {
                    name: "empty".into(),
                    state: vec![],
                },
            ],
            extra: serde_json::json!({ "run": "demo" }),
        }
    }

    type Named = Vec<(String, Tensor)>;

    fn tensors() -> (Named, Named) {
        let dev = Device::Cpu;
        let w = Tensor::new(
            &[[1.5f32, -0.0, f32::MIN_POSITIVE], [3.0, 1e-30, -7.25]],
            &dev,
        )
        .unwrap();
        let b = Tensor::new(&[0.1f32, 0.2], &dev).unwrap();
        let model = vec![
            ("fc0.weight".to_string(), w.t().unwrap()),
            ("fc0.bias".to_string(), b),
        ];
        let step = Tensor::new(&[1234i64], &dev).unwrap();
        let m = Tensor::new(&[0.5f32, -0.5], &dev).unwrap();
        (
            model,
            vec![
                ("step".to_string(), step),
                ("momentum.fc0.bias".to_string(), m),
            ],
        )
    }

    fn bits(t: &Tensor) -> Vec<u8> {
        let t = t.flatten_all().unwrap();
        match t.dtype() {
            DType::F32 => t
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            DType::I64 => t
                .to_vec1::<i64>()
                .unwrap()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn one_state_encodes_to_the_same_bytes_under_any_tag() {
        let dir = tempfile::tempdir().unwrap();
        let (model, optim) = tensors();
        let first = encode(dir.path(), "best", &meta(), &model, &optim).unwrap();
        // Several encodings, since the metadata map's order would differ about every other time.
        for tag in ["last", "best", "epoch-3", "last"] {
            let again = encode(dir.path(), tag, &meta(), &model, &optim).unwrap();
            assert!(again.bytes == first.bytes, "{tag} differs from best");
        }
        let moved = CheckpointMeta {
            step: 1235,
            ..meta()
        };
        let other = encode(dir.path(), "last", &moved, &model, &optim).unwrap();
        assert!(other.bytes != first.bytes);
    }

    #[test]
    fn save_and_load_round_trip_bitwise() {
        let dir = tempfile::tempdir().unwrap();
        let ckpt_dir = dir.path().join("checkpoints");
        let (model, optim) = tensors();
        let path = save(&ckpt_dir, "epoch-3", &meta(), &model, &optim).unwrap();
        assert_eq!(path, ckpt_dir.join("epoch-3.safetensors"));
        let loaded = load(&path).unwrap();
        let expected = CheckpointMeta {
            format_version: FORMAT_VERSION,
            ..meta()
        };
        assert_eq!(loaded.meta, expected);
        assert_eq!(loaded.tag, "epoch-3");
        for (saved, restored) in [(&model, &loaded.model), (&optim, &loaded.optimizer)] {
            assert_eq!(saved.len(), restored.len());
            for (name, t) in saved {
                let r = &restored[name];
                assert_eq!((r.dims(), r.dtype()), (t.dims(), t.dtype()), "{name}");
                assert_eq!(bits(r), bits(t), "{name}");
            }
        }
        let mut names: Vec<_> = std::fs::read_dir(&ckpt_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["epoch-3.safetensors"],
            "one file per checkpoint, no temp files left behind"
        );
    }

    #[test]
    fn corrupt_or_foreign_files_give_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (model, optim) = tensors();
        let path = save(dir.path(), "c", &meta(), &model, &optim).unwrap();
        let good = std::fs::read(&path).unwrap();
        let write = |bytes: &[u8]| std::fs::write(&path, bytes).unwrap();
        let err = |bytes: &[u8]| {
            write(bytes);
            load(&path).unwrap_err().to_string()
        };
        let prefix = format!("checkpoint {} is corrupt:", path.display());

        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x01; // A bit in the tensor data.
        let e = err(&flipped);
        assert!(
            e.starts_with(&prefix) && e.contains("checksum mismatch"),
            "{e}"
        );
        let e = err(&good[..good.len() - 4]);
        assert!(e.starts_with(&prefix), "{e}");
        assert!(err(b"not a checkpoint at all").starts_with(&prefix));
        assert!(err(b"").starts_with(&prefix));

        let plain = safetensors::tensor::serialize(
            [(
                "x",
                &CpuTensor {
                    dtype: Dtype::U8,
                    shape: vec![1],
                    bytes: vec![7],
                },
            )],
            None,
        )
        .unwrap();
        assert!(err(&plain).contains("is not a trainrt checkpoint"));

        let version = br#"\"format_version\":1"#;
        let at = good
            .windows(version.len())
            .position(|w| w == version)
            .unwrap();
        let mut future = good.clone();
        future[at + version.len() - 1] = b'9';
        let e = err(&future);
        assert!(
            e.contains("has format version 9; this build reads version 1"),
            "{e}"
        );

        let missing = load(&dir.path().join("nope.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(
            missing.starts_with("cannot read checkpoint") && missing.contains("nope.safetensors"),
            "{missing}"
        );
    }

    #[test]
    fn tags_that_could_escape_the_directory_are_rejected() {
        for bad in [
            "../../etc/passwd",
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a\\b",
            "tag with space",
            "é",
            &"x".repeat(65),
        ] {
            assert!(validate_tag(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["best", "epoch-3", "step_100.v2", "A", &"x".repeat(64)] {
            assert_eq!(validate_tag(good), Ok(()), "{good:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let (model, optim) = tensors();
        let err = save(dir.path(), "../escape", &meta(), &model, &optim).unwrap_err();
        assert!(matches!(err, CheckpointError::InvalidTag { .. }), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(
            !dir.path()
                .parent()
                .unwrap()
                .join("escape.safetensors")
                .exists()
        );
    }

    #[test]
    fn unencodable_checkpoints_are_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let (model, _) = tensors();
        let twice = [model.clone(), model].concat();
        let err = save(dir.path(), "d", &meta(), &twice, &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`model.fc0.weight`") && err.contains("used twice"),
            "{err}"
        );
        let nan = CheckpointMeta {
            lr: f64::NAN,
            ..meta()
        };
        let err = save(dir.path(), "n", &nan, &[], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("learning rate NaN is not finite"), "{err}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "nothing written"
        );
    }
}
