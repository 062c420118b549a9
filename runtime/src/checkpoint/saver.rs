//! The checkpoints of one run: what is on disk (tags), what is on its way there (the writer
//! thread), and the rules for when a save is committed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::Tensor;

use super::{
    CheckpointError, CheckpointMeta, Encoded, LAST_TAG, LoadedCheckpoint, Writer, encode, load,
};

/// Saves, commits and restores a run's checkpoints.
///
/// A save serializes the checkpoint at once, where the tensors are, and stages it; the writer
/// thread writes and fsyncs it after the next [`CheckpointSaver::commit`]. The trainer commits
/// after every event's answers are applied, except `epoch-end`'s, whose saves go to disk in one
/// group with that epoch's `last`.
pub struct CheckpointSaver {
    dir: PathBuf,
    writer: Writer,
    /// Tags of the checkpoints a callback may restore: saved in this run (`last` included, once
    /// this run wrote it), or found on disk when the run resumed (`last` excluded: it is the
    /// state the run resumed from).
    tags: BTreeSet<String>,
    /// The latest checkpoint serialized, with its metadata, while the tensors it holds are still
    /// the model's and the optimizer's: a save of the same state under another tag (an epoch's
    /// `best`, then its `last`) reuses the bytes. Forgotten whenever those tensors change.
    latest: Option<(CheckpointMeta, Encoded)>,
}

impl CheckpointSaver {
    /// The checkpoints in `dir` (a run's `checkpoints/`), with the tags already there.
    pub fn open(dir: &Path) -> Result<Self, CheckpointError> {
        let mut tags = existing_tags(dir);
        tags.remove(LAST_TAG);
        Ok(Self {
            dir: dir.to_path_buf(),
            writer: Writer::new()?,
            tags,
            latest: None,
        })
    }

    /// Tags a callback may restore.
    pub fn tags(&self) -> &BTreeSet<String> {
        &self.tags
    }

    /// The model or optimizer changed (a step, a restore): the next save serializes afresh.
    pub fn weights_changed(&mut self) {
        self.latest = None;
    }

    /// Serializes checkpoint `tag` (or reuses the bytes of an identical save) and stages it;
    /// returns the size of the file it will write.
    pub fn save(
        &mut self,
        tag: &str,
        meta: CheckpointMeta,
        model: &[(String, Tensor)],
        optimizer: &[(String, Tensor)],
    ) -> Result<u64, CheckpointError> {
        let encoded = match &self.latest {
            Some((same, encoded)) if *same == meta => encoded.retagged(tag)?,
            _ => encode(&self.dir, tag, &meta, model, optimizer)?,
        };
        let bytes = encoded.len();
        self.latest = Some((meta, encoded.clone()));
        self.writer.stage(encoded);
        self.tags.insert(tag.to_string());
        Ok(bytes)
    }

    /// Hands what is staged to the writer thread as one group.
    pub fn commit(&mut self) -> Result<(), CheckpointError> {
        self.writer.commit()
    }

    /// Reports a failed write among those finished, without waiting.
    pub fn check(&mut self) -> Result<(), CheckpointError> {
        self.writer.check()
    }

    /// Waits until every checkpoint saved so far is on disk.
    pub fn wait(&mut self) -> Result<(), CheckpointError> {
        self.writer.wait()
    }

    /// Loads checkpoint `tag` from disk ([`CheckpointSaver::wait`] first: it may still be on its
    /// way there). The caller is about to change the weights, so the next save serializes afresh
    /// (even if this load fails half-way).
    pub fn load(&mut self, tag: &str) -> Result<LoadedCheckpoint, CheckpointError> {
        self.latest = None;
        load(&self.dir.join(format!("{tag}.safetensors")))
    }
}

/// Tags of the checkpoints already in a directory.
fn existing_tags(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_suffix(".safetensors"))
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default()
}
