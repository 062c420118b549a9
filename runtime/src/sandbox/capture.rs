//! A guest's stdout and stderr: bytes land in a small buffer the host drains after every call.
//! Past the buffer's cap they are dropped and counted, so a guest that floods its output is cut
//! short, never trapped, and never makes the host hold more than one call's worth of text.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// How much a guest may hand over in one `write`; WASI streams ask before writing.
const WRITE_PERMIT: usize = 64 << 10;

/// One captured output stream. Clones share the buffer.
#[derive(Clone)]
pub(crate) struct CapturedOutput {
    inner: Arc<Mutex<Captured>>,
}

struct Captured {
    pending: Vec<u8>,
    cap: usize,
    dropped: u64,
    /// Bytes handed over since the last [`CapturedOutput::take_written`], kept or not: the work
    /// the host did for them is charged to the guest.
    written: u64,
}

impl CapturedOutput {
    /// A stream that holds at most `cap` bytes between two [`CapturedOutput::take`]s.
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Captured {
                pending: Vec::new(),
                cap,
                dropped: 0,
                written: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Captured> {
        // A panic elsewhere cannot leave the buffer inconsistent: every update is one push.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True when nothing was written since the last take: the hot path's cheap check.
    pub(crate) fn is_empty(&self) -> bool {
        let c = self.lock();
        c.pending.is_empty() && c.dropped == 0
    }

    /// Bytes handed over since the last call of this, kept or dropped.
    pub(crate) fn take_written(&self) -> u64 {
        std::mem::take(&mut self.lock().written)
    }

    /// The bytes written since the last take, and how many were dropped for want of room.
    pub(crate) fn take(&self) -> (Vec<u8>, u64) {
        let mut c = self.lock();
        let dropped = std::mem::take(&mut c.dropped);
        (std::mem::take(&mut c.pending), dropped)
    }
}

impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        let mut c = self.lock();
        let room = c.cap.saturating_sub(c.pending.len());
        let keep = room.min(bytes.len());
        c.pending.extend_from_slice(&bytes[..keep]);
        c.dropped += (bytes.len() - keep) as u64;
        c.written += bytes.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always ready: what does not fit is dropped, so a writer never waits or fails.
        Ok(WRITE_PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only WASI 0.3 guests use this, and the sandbox links WASI 0.2 alone.
        Box::new(tokio::io::sink())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_up_to_the_cap_and_counts_the_rest() {
        let out = CapturedOutput::new(8);
        let mut stream = out.p2_stream();
        assert!(out.is_empty());
        stream.write(Bytes::from_static(b"hello ")).unwrap();
        stream.write(Bytes::from_static(b"world")).unwrap();
        assert_eq!(out.take(), (b"hello wo".to_vec(), 3));
        assert_eq!(out.take_written(), 11);
        assert!(out.is_empty());
        stream.write(Bytes::from_static(b"again")).unwrap();
        assert_eq!(out.take(), (b"again".to_vec(), 0));
    }
}
