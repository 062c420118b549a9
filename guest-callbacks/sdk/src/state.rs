//! A tiny versioned little-endian format for callback state (what `snapshot` returns).
//!
//! The state travels inside checkpoints, so it must survive a resume in a later process, and a
//! corrupt or foreign blob must be refused with an error rather than a trap. No serde: guests
//! stay small. The first byte is the callback's format version.
//!
//! ```
//! use trainrt_guest::state::{StateReader, StateWriter};
//!
//! let mut w = StateWriter::new(1);
//! w.u32(3);
//! w.opt_f64(Some(0.25));
//! let bytes = w.finish();
//!
//! let mut r = StateReader::new(&bytes, 1)?;
//! assert_eq!(r.u32()?, 3);
//! assert_eq!(r.opt_f64()?, Some(0.25));
//! r.finish()?;
//! # Ok::<(), String>(())
//! ```

/// Writes values in order after a version byte.
#[derive(Debug, Clone)]
pub struct StateWriter {
    bytes: Vec<u8>,
}

impl StateWriter {
    /// Starts a state in format `version`.
    pub fn new(version: u8) -> Self {
        StateWriter {
            bytes: vec![version],
        }
    }

    /// Appends a `u32`.
    pub fn u32(&mut self, v: u32) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    /// Appends a `u64`.
    pub fn u64(&mut self, v: u64) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    /// Appends an `f64`, bit for bit (infinities and NaN included).
    pub fn f64(&mut self, v: f64) {
        self.u64(v.to_bits());
    }

    /// Appends a `bool` as one byte.
    pub fn bool(&mut self, v: bool) {
        self.bytes.push(u8::from(v));
    }

    /// Appends an optional `f64`: a presence byte, then the value if present.
    pub fn opt_f64(&mut self, v: Option<f64>) {
        self.bool(v.is_some());
        if let Some(v) = v {
            self.f64(v);
        }
    }

    /// Appends a string: its byte length as `u32`, then its UTF-8 bytes.
    ///
    /// Callback state strings are short (tags, names); one over 4 GiB cannot occur in a 32-bit
    /// guest's memory alongside its copy, so the length is saturated rather than checked.
    pub fn str(&mut self, v: &str) {
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.bytes.extend_from_slice(v.as_bytes());
    }

    /// The finished state.
    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

/// Reads values written by [`StateWriter`], in the same order; every read returns `Err` on
/// truncated or malformed input instead of panicking.
#[derive(Debug, Clone)]
pub struct StateReader<'a> {
    rest: &'a [u8],
}

impl<'a> StateReader<'a> {
    /// Checks the version byte; a state in another format (or an empty one) is an error.
    pub fn new(bytes: &'a [u8], version: u8) -> Result<Self, String> {
        match bytes.split_first() {
            None => Err("callback state is empty".to_string()),
            Some((v, rest)) if *v == version => Ok(StateReader { rest }),
            Some((v, _)) => Err(format!(
                "callback state has format version {v}, expected {version}"
            )),
        }
    }

    fn take<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let Some((head, rest)) = self.rest.split_first_chunk::<N>() else {
            return Err(format!("callback state is truncated (reading {what})"));
        };
        self.rest = rest;
        Ok(*head)
    }

    /// Reads a `u32`.
    pub fn u32(&mut self) -> Result<u32, String> {
        self.take("u32").map(u32::from_le_bytes)
    }

    /// Reads a `u64`.
    pub fn u64(&mut self) -> Result<u64, String> {
        self.take("u64").map(u64::from_le_bytes)
    }

    /// Reads an `f64`.
    pub fn f64(&mut self) -> Result<f64, String> {
        self.take("f64")
            .map(|b| f64::from_bits(u64::from_le_bytes(b)))
    }

    /// Reads a `bool`; a byte other than 0 or 1 is an error.
    pub fn bool(&mut self) -> Result<bool, String> {
        match self.take::<1>("bool")? {
            [0] => Ok(false),
            [1] => Ok(true),
            [b] => Err(format!("callback state is corrupt (bool byte {b})")),
        }
    }

    /// Reads an optional `f64`.
    pub fn opt_f64(&mut self) -> Result<Option<f64>, String> {
        if self.bool()? {
            self.f64().map(Some)
        } else {
            Ok(None)
        }
    }

    /// Reads a string.
    pub fn str(&mut self) -> Result<String, String> {
        let len = self.u32()? as usize;
        if len > self.rest.len() {
            return Err("callback state is truncated (reading a string)".to_string());
        }
        let (bytes, rest) = self.rest.split_at(len);
        self.rest = rest;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| "callback state is corrupt (string is not UTF-8)".to_string())
    }

    /// Checks that everything was read: trailing bytes mean a different layout.
    pub fn finish(self) -> Result<(), String> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "callback state has {} unexpected trailing bytes",
                self.rest.len()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = StateWriter::new(7);
        w.u32(42);
        w.u64(u64::MAX - 1);
        w.f64(f64::NEG_INFINITY);
        w.bool(true);
        w.opt_f64(None);
        w.opt_f64(Some(-0.5));
        w.str("top-1");
        w.finish()
    }

    #[test]
    fn roundtrip() -> Result<(), String> {
        let bytes = sample();
        let mut r = StateReader::new(&bytes, 7)?;
        assert_eq!(r.u32()?, 42);
        assert_eq!(r.u64()?, u64::MAX - 1);
        assert_eq!(r.f64()?, f64::NEG_INFINITY);
        assert!(r.bool()?);
        assert_eq!(r.opt_f64()?, None);
        assert_eq!(r.opt_f64()?, Some(-0.5));
        assert_eq!(r.str()?, "top-1");
        r.finish()
    }

    /// Reads `bytes` as the sample layout, as a callback's `restore` would.
    fn read_sample(bytes: &[u8]) -> Result<(), String> {
        let mut r = StateReader::new(bytes, 7)?;
        r.u32()?;
        r.u64()?;
        r.f64()?;
        r.bool()?;
        r.opt_f64()?;
        r.opt_f64()?;
        r.str()?;
        r.finish()
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = sample();
        for len in 0..bytes.len() {
            assert!(read_sample(&bytes[..len]).is_err(), "prefix of {len} bytes");
        }
        assert!(read_sample(&bytes).is_ok());
    }

    #[test]
    fn garbage_is_rejected() {
        let mut wrong_version = sample();
        wrong_version[0] = 8;
        assert_eq!(
            read_sample(&wrong_version),
            Err("callback state has format version 8, expected 7".to_string())
        );
        let mut trailing = sample();
        trailing.push(0);
        assert!(read_sample(&trailing).is_err());
        let mut bad_bool = sample();
        bad_bool[1 + 4 + 8 + 8] = 2;
        assert!(read_sample(&bad_bool).is_err());
        // Deterministic pseudo-random blobs: any outcome but a panic is acceptable.
        let mut x: u32 = 12345;
        for _ in 0..2000 {
            let mut blob: Vec<u8> = (0..40)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            blob[0] = 7;
            let _ = read_sample(&blob);
        }
    }

    #[test]
    fn huge_string_length_is_an_error() {
        let mut w = StateWriter::new(1);
        w.u32(u32::MAX);
        let bytes = w.finish();
        let mut r = StateReader::new(&bytes, 1).expect("version matches");
        assert!(r.str().is_err());
    }
}
