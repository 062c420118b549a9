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
mod saver;
mod writer;

use encoding::{CpuTensor, checksum, to_cpu};
pub use meta::{CallbackState, CheckpointMeta};
pub use saver::CheckpointSaver;
pub use writer::Writer;

/// The checkpoint format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// The safetensors metadata key holding [`CheckpointMeta`] as JSON.
pub const METADATA_KEY: &str = "trainrt";

/// The safetensors metadata key holding the checksum.
const CHECKSUM_KEY: &str = "trainrt.crc32";

/// The tag of the trainer's own checkpoint, written at every epoch end and at the end of
/// training; what `--resume` continues from.
pub const LAST_TAG: &str = "last";

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

/// Checks that `tag` can name a checkpoint file on any file system: 1 to 64 characters from
/// `[A-Za-z0-9_.-]`, not starting with `.` (so never `.`, `..` or a hidden file) nor ending with
/// one (Windows drops it), never a path, and never a name Windows reserves for a device (`con`,
/// `nul`, `com1`, ... in any case, with or without an extension). Tags that differ only in case
/// name one file on case-insensitive file systems; [`crate::decision`] keeps them apart.
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
    if tag.ends_with('.') {
        return Err("must not end with `.`".into());
    }
    let stem = tag.split('.').next().unwrap_or(tag).to_ascii_lowercase();
    let device = matches!(stem.as_str(), "con" | "prn" | "aux" | "nul")
        || (stem.len() == 4
            && (stem.starts_with("com") || stem.starts_with("lpt"))
            && matches!(stem.as_bytes()[3], b'1'..=b'9'));
    if device {
        return Err(format!(
            "`{stem}` is a device name on Windows, where the file could not be created"
        ));
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
    /// The checkpoint file's size in bytes.
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Whether the checkpoint is empty (never: it holds a header at least).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

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
mod tests;
