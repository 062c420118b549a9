//! Which epochs get a checkpoint, and the bookkeeping each policy keeps across a resume.

use trainrt_guest::monitor::Mode;
use trainrt_guest::state::{StateReader, StateWriter};

/// The saving policy and its state.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Policy {
    /// Every N-th epoch, under its own tag.
    Every,
    /// On improvement, under one tag; holds the best value so far.
    Best(f64),
    /// The k best epochs, in k rotating slots.
    TopK(TopK),
}

/// What a top-k slot holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Kept {
    pub(crate) value: f64,
    pub(crate) epoch: u32,
}

/// k slots, each empty or holding the checkpoint of one epoch.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TopK {
    slots: Vec<Option<Kept>>,
}

impl TopK {
    /// `k` empty slots.
    pub(crate) fn new(k: u32) -> Self {
        TopK {
            slots: vec![None; k as usize],
        }
    }

    /// The number of slots, k.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Offers epoch `epoch`'s `value`. If it belongs in the top k, takes the first empty slot or
    /// else the worst kept one (when `value` strictly beats it), and returns the slot index and
    /// what it held.
    pub(crate) fn offer(
        &mut self,
        mode: Mode,
        value: f64,
        epoch: u32,
    ) -> Option<(usize, Option<Kept>)> {
        let slot = match self.slots.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                let (worst, kept) = self
                    .slots
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| s.map(|k| (i, k)))
                    // `improves(a, b)` means a is better, so the worst is the one everything
                    // else improves on.
                    .reduce(|w, c| {
                        if mode.improves(w.1.value, c.1.value, 0.0) {
                            c
                        } else {
                            w
                        }
                    })?;
                if !mode.improves(value, kept.value, 0.0) {
                    return None;
                }
                worst
            }
        };
        let previous = self.slots[slot].replace(Kept { value, epoch });
        Some((slot, previous))
    }
}

impl Policy {
    /// Appends the policy's kind and state.
    pub(crate) fn write(&self, w: &mut StateWriter) {
        match self {
            Policy::Every => w.u32(0),
            Policy::Best(best) => {
                w.u32(1);
                w.f64(*best);
            }
            Policy::TopK(top) => {
                w.u32(2);
                w.u32(u32::try_from(top.slots.len()).unwrap_or(u32::MAX));
                for slot in &top.slots {
                    w.bool(slot.is_some());
                    if let Some(kept) = slot {
                        w.f64(kept.value);
                        w.u32(kept.epoch);
                    }
                }
            }
        }
    }

    /// Reads a state written by [`Policy::write`], refusing one saved under another policy or
    /// another `keep_top_k`, whose bookkeeping would not mean the same thing.
    pub(crate) fn read_same_shape(&self, r: &mut StateReader<'_>) -> Result<Policy, String> {
        let kind = r.u32()?;
        match (self, kind) {
            (Policy::Every, 0) => Ok(Policy::Every),
            (Policy::Best(_), 1) => Ok(Policy::Best(r.f64()?)),
            (Policy::TopK(current), 2) => {
                let k = r.u32()?;
                if k as usize != current.slots.len() {
                    return Err(format!(
                        "the saved model-checkpoint state is for keep_top_k={k}, not keep_top_k={}",
                        current.slots.len()
                    ));
                }
                let mut slots = Vec::with_capacity(current.slots.len());
                for _ in 0..k {
                    let kept = if r.bool()? {
                        Some(Kept {
                            value: r.f64()?,
                            epoch: r.u32()?,
                        })
                    } else {
                        None
                    };
                    slots.push(kept);
                }
                Ok(Policy::TopK(TopK { slots }))
            }
            (_, 0..=2) => Err(
                "the saved model-checkpoint state is for another policy (save_best_only or \
                 keep_top_k changed since it was saved)"
                    .to_string(),
            ),
            (_, other) => Err(format!(
                "the saved model-checkpoint state is corrupt (policy {other})"
            )),
        }
    }
}
