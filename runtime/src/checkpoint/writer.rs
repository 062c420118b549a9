//! Checkpoint writes off the training thread. Serializing a checkpoint needs the tensors and stays
//! on the trainer's thread; writing and fsyncing it is I/O, which this thread does while training
//! goes on.
//!
//! Checkpoints are staged, then committed as a group at the trainer's fixed points: an epoch's
//! `best` (saved when a callback answers `epoch-end`) and its `last` go to disk together, with
//! one sync of the directory instead of one per file (see [`write_all`]). Groups are written one
//! at a time, in the order committed, so a crash still leaves every checkpoint whole: the
//! previous one, or the new one.
//!
//! At most one group waits while another is written; a further commit blocks until there is
//! room, which bounds memory at two groups of serialized checkpoints.

use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::thread::JoinHandle;

use super::{CheckpointError, Encoded, write_all};

/// A background checkpoint writer. Errors come back at the next [`Writer::check`] or
/// [`Writer::wait`], in commit order.
pub struct Writer {
    jobs: Option<SyncSender<Vec<Encoded>>>,
    results: Receiver<Result<(), CheckpointError>>,
    thread: Option<JoinHandle<()>>,
    /// Staged, not yet handed to the thread.
    staged: Vec<Encoded>,
    /// Groups handed to the thread whose result has not been read.
    in_flight: usize,
}

impl Writer {
    /// Starts the writer thread.
    pub fn new() -> Result<Self, CheckpointError> {
        let (jobs, queue) = sync_channel::<Vec<Encoded>>(1);
        let (done, results) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("trainrt-checkpoint".into())
            .spawn(move || {
                for group in queue {
                    if done.send(write_all(&group)).is_err() {
                        break;
                    }
                }
            })
            .map_err(|source| CheckpointError::Io {
                action: "cannot start the checkpoint writer thread",
                path: std::path::PathBuf::new(),
                source,
            })?;
        Ok(Self {
            jobs: Some(jobs),
            results,
            thread: Some(thread),
            staged: Vec::new(),
            in_flight: 0,
        })
    }

    /// Adds `checkpoint` to the group the next [`Writer::commit`] (or [`Writer::wait`]) hands
    /// to the thread.
    pub fn stage(&mut self, checkpoint: Encoded) {
        self.staged.push(checkpoint);
    }

    /// Hands the staged checkpoints to the thread as one group (blocking while another group
    /// already waits). Failures of earlier writes are not reported here but by
    /// [`Writer::check`] and [`Writer::wait`], so the caller decides where they end the run.
    pub fn commit(&mut self) -> Result<(), CheckpointError> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let group = std::mem::take(&mut self.staged);
        let sent = match &self.jobs {
            Some(jobs) => jobs.send(group).is_ok(),
            None => false,
        };
        if !sent {
            // The thread is gone: it panicked. Say so rather than lose the checkpoints silently.
            return Err(self.dead());
        }
        self.in_flight += 1;
        Ok(())
    }

    /// Stages `checkpoint` and commits it, with anything staged before it.
    pub fn submit(&mut self, checkpoint: Encoded) -> Result<(), CheckpointError> {
        self.stage(checkpoint);
        self.commit()
    }

    /// Reports the first failed write among those already finished, without waiting.
    pub fn check(&mut self) -> Result<(), CheckpointError> {
        loop {
            match self.results.try_recv() {
                Ok(result) => {
                    self.in_flight -= 1;
                    result?;
                }
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Disconnected) if self.in_flight == 0 => return Ok(()),
                Err(TryRecvError::Disconnected) => return Err(self.dead()),
            }
        }
    }

    /// Commits what is staged and waits until every checkpoint is on disk; the first failure
    /// is returned.
    pub fn wait(&mut self) -> Result<(), CheckpointError> {
        self.commit()?;
        let mut first_error = None;
        while self.in_flight > 0 {
            match self.results.recv() {
                Ok(result) => {
                    self.in_flight -= 1;
                    if let Err(e) = result {
                        first_error.get_or_insert(e);
                    }
                }
                Err(_) => return Err(self.dead()),
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn dead(&mut self) -> CheckpointError {
        self.in_flight = 0;
        CheckpointError::Io {
            action: "the checkpoint writer thread stopped unexpectedly while writing to",
            path: std::path::PathBuf::from("checkpoints"),
            source: std::io::Error::other("writer thread panicked"),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // What was staged is written too; closing the queue lets the thread finish what it
        // holds and exit.
        let _ = self.commit();
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{CheckpointMeta, encode, load};
    use candle_core::{Device, Tensor};

    fn checkpoint(dir: &std::path::Path, tag: &str, value: f32) -> Encoded {
        let meta = CheckpointMeta {
            format_version: crate::checkpoint::FORMAT_VERSION,
            epoch: 1,
            step: 2,
            lr: 0.1,
            model: "test".into(),
            optimizer: "sgd".into(),
            seed: 1,
            callback_states: Vec::new(),
            extra: serde_json::Value::Null,
        };
        let t = Tensor::from_slice(&[value; 4], 4, &Device::Cpu).unwrap();
        encode(dir, tag, &meta, &[("w".into(), t)], &[]).unwrap()
    }

    #[test]
    fn writes_in_order_and_waits() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::new().unwrap();
        for i in 0..5 {
            w.submit(checkpoint(dir.path(), "same", i as f32)).unwrap();
        }
        w.wait().unwrap();
        let last = load(&dir.path().join("same.safetensors")).unwrap();
        let v: Vec<f32> = last.model["w"].to_vec1().unwrap();
        assert_eq!(v, vec![4.0; 4], "the last submitted write wins");
    }

    #[test]
    fn staged_checkpoints_are_written_together_at_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::new().unwrap();
        w.stage(checkpoint(dir.path(), "best", 1.0));
        w.stage(checkpoint(dir.path(), "last", 2.0));
        // Nothing was handed to the thread yet.
        w.check().unwrap();
        assert!(!dir.path().join("best.safetensors").exists());
        w.commit().unwrap();
        w.wait().unwrap();
        for (tag, value) in [("best", 1.0), ("last", 2.0)] {
            let c = load(&dir.path().join(format!("{tag}.safetensors"))).unwrap();
            assert_eq!(c.tag, tag);
            assert_eq!(c.model["w"].to_vec1::<f32>().unwrap(), vec![value; 4]);
        }
    }

    #[cfg(unix)]
    #[test]
    fn one_state_staged_under_two_tags_is_one_file_with_two_names() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::new().unwrap();
        w.stage(checkpoint(dir.path(), "best", 1.0));
        w.stage(checkpoint(dir.path(), "last", 1.0));
        w.commit().unwrap();
        w.wait().unwrap();
        let inode = |tag: &str| {
            let path = dir.path().join(format!("{tag}.safetensors"));
            assert_eq!(load(&path).unwrap().tag, tag, "the tag is the file's name");
            std::fs::metadata(path).unwrap().ino()
        };
        assert_eq!(inode("best"), inode("last"));
        // Another state for `last` leaves `best` as it was.
        w.submit(checkpoint(dir.path(), "last", 2.0)).unwrap();
        w.wait().unwrap();
        assert_ne!(inode("best"), inode("last"));
        let best = load(&dir.path().join("best.safetensors")).unwrap();
        assert_eq!(best.model["w"].to_vec1::<f32>().unwrap(), vec![1.0; 4]);
    }

    #[test]
    fn wait_and_drop_write_what_was_staged() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::new().unwrap();
        w.stage(checkpoint(dir.path(), "waited", 1.0));
        w.wait().unwrap();
        assert!(load(&dir.path().join("waited.safetensors")).is_ok());
        w.stage(checkpoint(dir.path(), "dropped", 1.0));
        drop(w);
        assert!(load(&dir.path().join("dropped.safetensors")).is_ok());
    }

    #[test]
    fn a_failed_write_is_reported_at_the_next_wait() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the checkpoint directory should be: the write cannot succeed.
        let blocked = dir.path().join("blocked");
        std::fs::write(&blocked, b"").unwrap();
        let mut w = Writer::new().unwrap();
        w.submit(checkpoint(&blocked, "x", 1.0)).unwrap();
        let e = w.wait().unwrap_err().to_string();
        assert!(e.contains("blocked"), "{e}");
        w.submit(checkpoint(dir.path(), "ok", 1.0)).unwrap();
        w.wait().unwrap();
    }
}
