//! `tensorboard/events.out.tfevents.*`: the run's metrics for TensorBoard, written by hand.
//!
//! The format is small: a file of TFRecords (a little-endian `u64` length, its masked CRC-32C,
//! the bytes, their masked CRC-32C), each an `Event` protocol buffer. The first carries the file
//! version; the rest carry a `Summary` of scalar values (`simple_value`) or of text (the text
//! plugin's string tensor) at a global step. Only the handful of fields TensorBoard reads are
//! encoded, by the small encoder below.
//!
//! Every value is at the run's global step (epoch metrics at the epoch's last step), so a resumed
//! run can say where it starts again: its first event is a `SessionLog` START one step past its
//! checkpoint, and TensorBoard drops what an interrupted run wrote from there on instead of
//! showing those steps twice.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{AppendFile, RunDirError};

/// The version string TensorBoard expects in a file's first event.
const FILE_VERSION: &str = "brain.Event:2";

/// An open events file in a run's `tensorboard/` directory.
#[derive(Debug)]
pub struct TensorBoardWriter {
    file: AppendFile,
}

impl TensorBoardWriter {
    /// Creates a new events file in `dir` (created if missing); `resumed_at` is the global step a
    /// resumed run continues from.
    pub fn create(dir: &Path, resumed_at: Option<u64>) -> Result<Self, RunDirError> {
        std::fs::create_dir_all(dir).map_err(|e| RunDirError::io("cannot create", dir, e))?;
        static OPENED: AtomicU32 = AtomicU32::new(0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        // A new file per run (and resume), named as TensorBoard's own writers name theirs, with
        // the time to the nanosecond: TensorBoard reads a directory's files in name order, and
        // a resume's must come after the files it continues.
        let path = dir.join(format!(
            "events.out.tfevents.{}.{:09}.trainrt.{}.{:04}",
            now.as_secs(),
            now.subsec_nanos(),
            std::process::id(),
            OPENED.fetch_add(1, Ordering::Relaxed)
        ));
        let mut writer = Self {
            file: AppendFile::open(&path, true)?,
        };
        writer.record(&event(0, |e| e.string(3, FILE_VERSION)))?;
        if let Some(step) = resumed_at {
            // Event.session_log (7) { status (1): START (1) }, one step past the checkpoint:
            // TensorBoard keeps what came before (the checkpoint's epochs) and drops what an
            // interrupted run wrote from there on, which this run writes again.
            writer.record(&event(step + 1, |e| e.message(7, |log| log.varint(1, 1))))?;
        }
        Ok(writer)
    }

    /// Scalars at `step`, as `(tag, value)`.
    pub fn scalars<'a>(
        &mut self,
        step: u64,
        values: impl IntoIterator<Item = (&'a str, f64)>,
    ) -> Result<(), RunDirError> {
        let values: Vec<(&str, f64)> = values.into_iter().collect();
        if values.is_empty() {
            return Ok(());
        }
        self.record(&event(step, |e| {
            e.message(5, |summary| {
                for (tag, value) in &values {
                    // Summary.value (1) { tag (1), simple_value (2, float) }
                    summary.message(1, |v| {
                        v.string(1, tag);
                        v.float(2, *value as f32);
                    });
                }
            })
        }))
    }

    /// A line of text under `tag` at `step` (TensorBoard's text plugin shows it).
    pub fn text(&mut self, step: u64, tag: &str, text: &str) -> Result<(), RunDirError> {
        self.record(&event(step, |e| {
            e.message(5, |summary| {
                summary.message(1, |v| {
                    v.string(1, tag);
                    // Value.metadata (9) { plugin_data (1) { plugin_name (1): "text" } }
                    v.message(9, |m| m.message(1, |p| p.string(1, "text")));
                    // Value.tensor (8) { dtype (1): DT_STRING (7), tensor_shape (2): scalar,
                    // string_val (8) }
                    v.message(8, |t| {
                        t.varint(1, 7);
                        t.message(2, |_| {});
                        t.bytes(8, text.as_bytes());
                    });
                });
            })
        }))
    }

    /// Hands buffered records to the operating system.
    pub fn flush(&mut self) -> Result<(), RunDirError> {
        self.file.flush()
    }

    /// Flushes and waits until the records are on disk.
    pub fn sync(&mut self) -> Result<(), RunDirError> {
        self.file.sync()
    }

    /// The events file's path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Appends one TFRecord.
    fn record(&mut self, data: &[u8]) -> Result<(), RunDirError> {
        let len = (data.len() as u64).to_le_bytes();
        let mut framed = Vec::with_capacity(data.len() + 16);
        framed.extend_from_slice(&len);
        framed.extend_from_slice(&masked_crc(&len).to_le_bytes());
        framed.extend_from_slice(data);
        framed.extend_from_slice(&masked_crc(data).to_le_bytes());
        self.file.write(&framed)
    }
}

/// TFRecord's checksum: CRC-32C, rotated and offset so that a CRC of data holding CRCs is not
/// itself trivially structured.
fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// An `Event` at `step`, stamped with the wall-clock time, with the fields `body` adds.
fn event(step: u64, body: impl FnOnce(&mut Proto)) -> Vec<u8> {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let mut e = Proto::default();
    e.double(1, wall);
    e.varint(2, step);
    body(&mut e);
    e.0
}

/// A protocol-buffer message being encoded: fields appended in order.
#[derive(Default)]
struct Proto(Vec<u8>);

impl Proto {
    fn key(&mut self, field: u32, wire_type: u8) {
        self.raw_varint(u64::from(field) << 3 | u64::from(wire_type));
    }

    fn raw_varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn varint(&mut self, field: u32, v: u64) {
        self.key(field, 0);
        self.raw_varint(v);
    }

    fn double(&mut self, field: u32, v: f64) {
        self.key(field, 1);
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn float(&mut self, field: u32, v: f32) {
        self.key(field, 5);
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn bytes(&mut self, field: u32, v: &[u8]) {
        self.key(field, 2);
        self.raw_varint(v.len() as u64);
        self.0.extend_from_slice(v);
    }

    fn string(&mut self, field: u32, v: &str) {
        self.bytes(field, v.as_bytes());
    }

    fn message(&mut self, field: u32, body: impl FnOnce(&mut Proto)) {
        let mut inner = Proto::default();
        body(&mut inner);
        self.bytes(field, &inner.0);
    }
}

/// Reads back what [`TensorBoardWriter`] writes, checking every CRC: for tests, here and in
/// `tests/all`.
pub mod read {
    use super::masked_crc;

    /// One value of an events file.
    #[derive(Debug, Clone, PartialEq)]
    pub enum Point {
        /// A scalar: tag, step, value.
        Scalar(String, u64, f32),
        /// A text: tag, step, text.
        Text(String, u64, String),
        /// A session start (a resume) at a step.
        Start(u64),
    }

    /// Every value in `bytes` (an events file), in order; `Err` names the first bad record.
    pub fn points(bytes: &[u8]) -> Result<Vec<Point>, String> {
        let mut out = Vec::new();
        let mut rest = bytes;
        let mut index = 0;
        while !rest.is_empty() {
            let header = rest
                .get(..12)
                .ok_or(format!("record {index}: truncated header"))?;
            let len = u64::from_le_bytes(header[..8].try_into().expect("8 bytes")) as usize;
            if u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"))
                != masked_crc(&header[..8])
            {
                return Err(format!("record {index}: bad length CRC"));
            }
            let data = rest
                .get(12..12 + len)
                .ok_or(format!("record {index}: truncated data"))?;
            let crc = rest
                .get(12 + len..16 + len)
                .ok_or(format!("record {index}: truncated CRC"))?;
            if u32::from_le_bytes(crc.try_into().expect("4 bytes")) != masked_crc(data) {
                return Err(format!("record {index}: bad data CRC"));
            }
            event(data, &mut out).map_err(|e| format!("record {index}: {e}"))?;
            rest = &rest[16 + len..];
            index += 1;
        }
        Ok(out)
    }

    fn event(data: &[u8], out: &mut Vec<Point>) -> Result<(), String> {
        let mut step = 0;
        for (field, value) in fields(data)? {
            match (field, value) {
                (2, Field::Varint(v)) => step = v,
                (5, Field::Bytes(summary)) => {
                    for (f, v) in fields(summary)? {
                        if let (1, Field::Bytes(value)) = (f, v) {
                            out.push(summary_value(value, step)?);
                        }
                    }
                }
                (7, Field::Bytes(_)) => out.push(Point::Start(step)),
                _ => {}
            }
        }
        Ok(())
    }

    fn summary_value(data: &[u8], step: u64) -> Result<Point, String> {
        let (mut tag, mut scalar, mut text) = (String::new(), None, None);
        for (field, value) in fields(data)? {
            match (field, value) {
                (1, Field::Bytes(b)) => tag = String::from_utf8_lossy(b).into_owned(),
                (2, Field::Fixed32(v)) => scalar = Some(f32::from_le_bytes(v)),
                (8, Field::Bytes(tensor)) => {
                    for (f, v) in fields(tensor)? {
                        if let (8, Field::Bytes(s)) = (f, v) {
                            text = Some(String::from_utf8_lossy(s).into_owned());
                        }
                    }
                }
                _ => {}
            }
        }
        match (scalar, text) {
            (Some(v), _) => Ok(Point::Scalar(tag, step, v)),
            (None, Some(t)) => Ok(Point::Text(tag, step, t)),
            (None, None) => Err(format!("value {tag:?} holds neither a scalar nor text")),
        }
    }

    enum Field<'a> {
        Varint(u64),
        Fixed64,
        Fixed32([u8; 4]),
        Bytes(&'a [u8]),
    }

    fn fields(mut data: &[u8]) -> Result<Vec<(u32, Field<'_>)>, String> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let key = varint(&mut data)?;
            let field = (key >> 3) as u32;
            let value = match key & 7 {
                0 => Field::Varint(varint(&mut data)?),
                1 => {
                    data = data.get(8..).ok_or("truncated fixed64")?;
                    Field::Fixed64
                }
                2 => {
                    let len = varint(&mut data)? as usize;
                    let bytes = data.get(..len).ok_or("truncated bytes")?;
                    data = &data[len..];
                    Field::Bytes(bytes)
                }
                5 => {
                    let bytes = data.get(..4).ok_or("truncated fixed32")?;
                    data = &data[4..];
                    Field::Fixed32(bytes.try_into().expect("4 bytes"))
                }
                other => return Err(format!("wire type {other}")),
            };
            out.push((field, value));
        }
        Ok(out)
    }

    fn varint(data: &mut &[u8]) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = data.split_first().ok_or("truncated varint")?;
            *data = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }
}

#[cfg(test)]
mod tests {
    use super::read::{Point, points};
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // CRC-32C of "123456789" is 0xE3069283 (RFC 3720); TFRecord masks it.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(
            masked_crc(b"123456789"),
            0xe306_9283u32.rotate_right(15).wrapping_add(0xa282_ead8)
        );
    }

    #[test]
    fn scalars_text_and_a_resume_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = TensorBoardWriter::create(dir.path(), None).unwrap();
        w.scalars(45, [("epoch/loss", 0.5), ("epoch/lr", 0.05)])
            .unwrap();
        w.text(50, "decisions", "logger: stop").unwrap();
        w.sync().unwrap();
        let mut r = TensorBoardWriter::create(dir.path(), Some(45)).unwrap();
        r.scalars(90, [("epoch/loss", 0.25)]).unwrap();
        r.flush().unwrap();
        let first = points(&std::fs::read(w.path()).unwrap()).unwrap();
        assert_eq!(
            first,
            [
                Point::Scalar("epoch/loss".into(), 45, 0.5),
                Point::Scalar("epoch/lr".into(), 45, 0.05),
                Point::Text("decisions".into(), 50, "logger: stop".into()),
            ]
        );
        let second = points(&std::fs::read(r.path()).unwrap()).unwrap();
        assert_eq!(second[0], Point::Start(46), "past the checkpoint's step");
        // A flipped bit anywhere is found.
        let mut bad = std::fs::read(w.path()).unwrap();
        let at = bad.len() - 6;
        bad[at] ^= 1;
        assert!(points(&bad).is_err());
    }
}
