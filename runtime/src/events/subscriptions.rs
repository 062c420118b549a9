//! Which events a callback asked for at `init`.

use super::{ALL_KINDS, Event};
use crate::contract::EventKind;

/// Which events a callback asked for: a bit per kind plus the per-batch stride, checked on every
/// event without touching the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Subscriptions {
    bits: u16,
    batch_every: u32,
}

impl Subscriptions {
    /// Builds the filter from a callback's registration.
    pub fn new(kinds: &[EventKind], batch_every: u32) -> Self {
        let bits = kinds.iter().fold(0u16, |acc, k| acc | bit(*k));
        Self {
            bits,
            batch_every: batch_every.max(1),
        }
    }

    /// Whether the callback asked for this kind of event at all.
    pub fn wants_kind(&self, kind: EventKind) -> bool {
        self.bits & bit(kind) != 0
    }

    /// Whether the callback receives this event: kind subscribed and, for per-batch events, the
    /// step on its stride.
    pub fn wants(&self, event: &Event) -> bool {
        let kind = event.kind();
        if !self.wants_kind(kind) {
            return false;
        }
        // Every step is the common case: no division on the per-batch path for it.
        if self.batch_every == 1 {
            return true;
        }
        match event {
            // batch-start carries the steps taken before the batch, batch-end counts the batch:
            // both use the number of the batch's own step (1-based) so they pair up.
            Event::BatchStart(i) => (i.step + 1) % u64::from(self.batch_every) == 0,
            Event::BatchEnd(m) => m.step % u64::from(self.batch_every) == 0,
            _ => true,
        }
    }

    /// The subscribed kinds, in lifecycle order.
    pub fn kinds(&self) -> Vec<EventKind> {
        ALL_KINDS
            .into_iter()
            .filter(|k| self.wants_kind(*k))
            .collect()
    }

    /// Deliver per-batch events every this many steps.
    pub fn batch_every(&self) -> u32 {
        self.batch_every
    }
}

fn bit(kind: EventKind) -> u16 {
    1 << (kind as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::tests::batch_end;

    #[test]
    fn subscriptions_filter_kinds_and_batch_stride() {
        let subs = Subscriptions::new(&[EventKind::BatchEnd, EventKind::EpochEnd], 10);
        assert!(subs.wants_kind(EventKind::EpochEnd));
        assert!(!subs.wants_kind(EventKind::BatchStart));
        assert!(!subs.wants(&batch_end(9)));
        assert!(subs.wants(&batch_end(10)));
        assert!(subs.wants(&batch_end(20)));
        assert_eq!(subs.kinds(), vec![EventKind::BatchEnd, EventKind::EpochEnd]);
    }

    #[test]
    fn stride_zero_means_every_batch() {
        let subs = Subscriptions::new(&[EventKind::BatchEnd], 0);
        assert!(subs.wants(&batch_end(1)) && subs.wants(&batch_end(2)));
    }
}
