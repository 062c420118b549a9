//! Checkpoint writes off the training thread. Serializing a checkpoint needs the tensors and stays
//! on the trainer's thread; writing and fsyncing it is I/O, which this thread does while training
//! goes on. Writes happen one at a time, in the order submitted, each atomically as before, so a
//! crash still leaves every checkpoint whole: the previous one, or the new one.
//!
//! At most one checkpoint waits while another is written; a third `submit` blocks until there is
//! room, which bounds memory at two serialized checkpoints.

use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::thread::JoinHandle;

use super::{CheckpointError, Encoded};

/// A background checkpoint writer. Errors come back at the next [`Writer::check`] or
/// [`Writer::wait`], in submission order.
pub struct Writer {
    jobs: Option<SyncSender<Encoded>>,
    results: Receiver<Result<String, CheckpointError>>,
    thread: Option<JoinHandle<()>>,
    in_flight: usize,
}

impl Writer {
    /// Starts the writer thread.
    pub fn new() -> Result<Self, CheckpointError> {
        let (jobs, queue) = sync_channel::<Encoded>(1);
        let (done, results) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("trainrt-checkpoint".into())
            .spawn(move || {
                for job in queue {
                    let tag = job.tag.clone();
                    if done.send(job.write().map(|_| tag)).is_err() {
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
            in_flight: 0,
        })
    }

    /// Queues `checkpoint` for writing (blocking while another one already waits). Failures of
    /// earlier writes are not reported here but by [`Writer::check`] and [`Writer::wait`], so
    /// the caller decides where they end the run.
    pub fn submit(&mut self, checkpoint: Encoded) -> Result<(), CheckpointError> {
        let sent = match &self.jobs {
            Some(jobs) => jobs.send(checkpoint).is_ok(),
            None => false,
        };
        if !sent {
            // The thread is gone: it panicked. Say so rather than lose the checkpoint silently.
            return Err(self.dead());
        }
        self.in_flight += 1;
        Ok(())
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

    /// Waits until every submitted checkpoint is on disk; the first failure is returned.
    pub fn wait(&mut self) -> Result<(), CheckpointError> {
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
        // Closing the queue lets the thread finish what it holds and exit.
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
            tag: tag.into(),
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
