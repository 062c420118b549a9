//! Decisions in the canonical ABI's memory layout, for the events whose exports the SDK writes
//! by hand (see `__export`).
//!
//! `wit-bindgen`'s generated exports allocate the returned `list<decision>` on every call and
//! export a post-return function that frees it, which the host then calls: a second entry into
//! the guest for every event. For the events that arrive per batch and per epoch the SDK instead
//! keeps the lowered list, and the strings it points into, in buffers that live as long as the
//! component and are reused by the next such event. The host lifts a call's results before the
//! call returns to it, so they are read long before they are overwritten; with no post-return
//! there is no second entry, and in the steady state an event allocates nothing.

use crate::{Decision, Decisions};

/// One `decision` as the canonical ABI lays it out in linear memory: a `u8` discriminant at
/// offset 0, the payload at offset 8 (the largest case, `log-metric`, holds a string, i.e. a
/// pointer and a length, and an `f64`), 24 bytes in all, aligned to 8.
///
/// `word0` holds a string's pointer in its low half and its length in its high half
/// (little-endian: pointer at offset 8, length at 12) or an `f64`'s bits; `word1` holds the
/// metric's value.
#[repr(C, align(8))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawDecision {
    tag: u32,
    _pad: u32,
    word0: u64,
    word1: u64,
}

// The layout the canonical ABI gives `variant decision` in `wit/callbacks.wit`.
const _: () = assert!(size_of::<RawDecision>() == 24 && align_of::<RawDecision>() == 8);

/// The case indices of `variant decision`, in the order `wit/callbacks.wit` declares them.
mod case {
    pub const STOP_TRAINING: u32 = 0;
    pub const END_EPOCH: u32 = 1;
    pub const SAVE_CHECKPOINT: u32 = 2;
    pub const SET_LEARNING_RATE: u32 = 3;
    pub const RESTORE_CHECKPOINT: u32 = 4;
    pub const VALIDATE_NOW: u32 = 5;
    pub const LOG_METRIC: u32 = 6;
}

impl RawDecision {
    /// Lowers `d`; `addr` gives the linear-memory address of a string's bytes. The string must
    /// outlive every read of the result.
    pub(crate) fn lower(d: &Decision, addr: impl Fn(&str) -> u32) -> Self {
        let string = |s: &String| u64::from(addr(s)) | (len32(s) << 32);
        let (tag, word0, word1) = match d {
            Decision::StopTraining(reason) => (case::STOP_TRAINING, string(reason), 0),
            Decision::EndEpoch => (case::END_EPOCH, 0, 0),
            Decision::SaveCheckpoint(tag) => (case::SAVE_CHECKPOINT, string(tag), 0),
            Decision::SetLearningRate(lr) => (case::SET_LEARNING_RATE, lr.to_bits(), 0),
            Decision::RestoreCheckpoint(tag) => (case::RESTORE_CHECKPOINT, string(tag), 0),
            Decision::ValidateNow => (case::VALIDATE_NOW, 0, 0),
            Decision::LogMetric(m) => (case::LOG_METRIC, string(&m.name), m.value.to_bits()),
        };
        RawDecision {
            tag,
            _pad: 0,
            word0,
            word1,
        }
    }
}

/// A string's length as the canonical ABI's `u32`. Nothing in a 32-bit linear memory is longer;
/// elsewhere (native unit tests) saturating keeps this total.
fn len32(s: &str) -> u64 {
    u64::from(u32::try_from(s.len()).unwrap_or(u32::MAX))
}

/// The buffers behind one event's returned `list<decision>`.
#[derive(Debug)]
pub(crate) struct Lowered {
    /// What the callback decided during the last event; owns the strings `raw` points into.
    pub(crate) decisions: Decisions,
    /// `decisions`, lowered.
    raw: Vec<RawDecision>,
    /// The return area: the list's pointer and length, which the export returns the address of.
    ret: [u32; 2],
}

impl Lowered {
    /// Empty buffers.
    pub(crate) const fn new() -> Self {
        Lowered {
            decisions: Decisions::new(),
            raw: Vec::new(),
            ret: [0; 2],
        }
    }

    /// Empties the buffers for the next event, keeping their capacity. Inlined: most events
    /// decide nothing, and then this is a compare and a branch, not a call.
    #[inline(always)]
    pub(crate) fn clear(&mut self) {
        // `raw` is never longer than `decisions` (it is their lowering): with no decisions,
        // both are empty already.
        debug_assert!(self.raw.len() <= self.decisions.as_slice().len());
        if !self.decisions.is_empty() {
            self.clear_decisions();
        }
    }

    /// [`Lowered::clear`] after an event that decided something: drops the decisions' strings.
    #[inline(never)]
    fn clear_decisions(&mut self) {
        self.decisions.clear();
        self.raw.clear();
    }

    /// Lowers `decisions` and returns the address of the return area. Valid until the next call
    /// that touches these buffers. Inlined, like [`Lowered::clear`], for the event that decided
    /// nothing.
    ///
    /// Addresses and lengths are 32-bit on wasm32, the one target the exports exist on, so the
    /// conversions below are exact there; in native unit tests they truncate, and nothing reads
    /// them.
    #[inline(always)]
    pub(crate) fn lower(&mut self) -> *const u8 {
        if !self.decisions.is_empty() {
            self.lower_decisions();
        }
        self.ret = [addr_of(&self.raw), self.raw.len() as u32];
        self.ret.as_ptr().cast()
    }

    /// Appends the lowering of every decision to `raw`.
    #[inline(never)]
    fn lower_decisions(&mut self) {
        let addr = |s: &str| s.as_ptr() as usize as u32;
        self.raw.extend(
            self.decisions
                .as_slice()
                .iter()
                .map(|d| RawDecision::lower(d, addr)),
        );
    }
}

/// The address of a list's first element in linear memory.
fn addr_of<T>(list: &[T]) -> u32 {
    list.as_ptr() as usize as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Metric;

    /// Reads a lowered decision back as the canonical ABI's lifting does, from its bytes, with
    /// strings resolved by `strings` (address -> text).
    fn lift(raw: &RawDecision, strings: &[(u32, &str)]) -> Decision {
        // The 24 bytes in memory order (wasm is little-endian).
        let mut bytes = [0u8; 24];
        bytes[0..4].copy_from_slice(&raw.tag.to_le_bytes());
        bytes[4..8].copy_from_slice(&raw._pad.to_le_bytes());
        bytes[8..16].copy_from_slice(&raw.word0.to_le_bytes());
        bytes[16..24].copy_from_slice(&raw.word1.to_le_bytes());
        let u32_at =
            |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
        let f64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[o..o + 8]);
            f64::from_le_bytes(b)
        };
        let string = || {
            let (ptr, len) = (u32_at(8), u32_at(12));
            let text = strings
                .iter()
                .find(|(a, _)| *a == ptr)
                .map(|(_, s)| s.to_string())
                .unwrap_or_default();
            assert_eq!(text.len() as u32, len, "length at offset 12");
            text
        };
        match bytes[0] {
            0 => Decision::StopTraining(string()),
            1 => Decision::EndEpoch,
            2 => Decision::SaveCheckpoint(string()),
            3 => Decision::SetLearningRate(f64_at(8)),
            4 => Decision::RestoreCheckpoint(string()),
            5 => Decision::ValidateNow,
            6 => Decision::LogMetric(Metric {
                name: string(),
                value: f64_at(16),
            }),
            other => panic!("discriminant {other} is not a case of decision"),
        }
    }

    #[test]
    fn every_case_lowers_to_the_canonical_layout() {
        let all = [
            Decision::StopTraining("patience ran out".into()),
            Decision::EndEpoch,
            Decision::SaveCheckpoint("best".into()),
            Decision::SetLearningRate(0.025),
            Decision::RestoreCheckpoint("early-stopping-best".into()),
            Decision::ValidateNow,
            Decision::LogMetric(Metric {
                name: "early_stopping_wait".into(),
                value: -3.5,
            }),
        ];
        // Fake addresses: each distinct text gets its own.
        let texts = [
            "patience ran out",
            "best",
            "early-stopping-best",
            "early_stopping_wait",
        ];
        let strings: Vec<(u32, &str)> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| (0x1000 + 0x100 * i as u32, *t))
            .collect();
        let addr = |s: &str| {
            strings
                .iter()
                .find(|(_, t)| *t == s)
                .map(|(a, _)| *a)
                .unwrap_or(0)
        };
        for d in &all {
            let raw = RawDecision::lower(d, addr);
            assert_eq!(raw._pad, 0);
            assert_eq!(&lift(&raw, &strings), d);
        }
    }

    #[test]
    fn the_discriminants_follow_the_wit_order() {
        let tag = |d: &Decision| RawDecision::lower(d, |_| 0).tag;
        assert_eq!(tag(&Decision::StopTraining(String::new())), 0);
        assert_eq!(tag(&Decision::EndEpoch), 1);
        assert_eq!(tag(&Decision::SaveCheckpoint(String::new())), 2);
        assert_eq!(tag(&Decision::SetLearningRate(1.0)), 3);
        assert_eq!(tag(&Decision::RestoreCheckpoint(String::new())), 4);
        assert_eq!(tag(&Decision::ValidateNow), 5);
        let metric = Metric {
            name: String::new(),
            value: 0.0,
        };
        assert_eq!(tag(&Decision::LogMetric(metric)), 6);
    }

    #[test]
    fn clearing_keeps_capacity_for_the_next_event() {
        let mut l = Lowered::new();
        l.decisions.set_lr(0.1);
        l.raw.push(RawDecision::lower(&Decision::EndEpoch, |_| 0));
        let capacity = l.raw.capacity();
        l.clear();
        assert!(l.decisions.is_empty() && l.raw.is_empty());
        assert_eq!(l.raw.capacity(), capacity);
    }
}
