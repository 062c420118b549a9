//! Which events a callback wants, built at `init`.

use crate::__export::Registration;
use crate::EventKind;

/// The events a callback subscribes to; the host calls nothing else.
///
/// `Subscriptions::new()` subscribes to nothing, with batch events (if any) on every step.
/// Chain one method per event: `Subscriptions::new().epoch_end().batch_end_every(10)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Subscriptions {
    events: Vec<EventKind>,
    batch_every: u32,
}

impl Subscriptions {
    /// No events; batch events, once subscribed, on every step.
    pub fn new() -> Self {
        Self::default()
    }

    fn with(mut self, kind: EventKind) -> Self {
        if !self.events.contains(&kind) {
            self.events.push(kind);
        }
        self
    }

    /// `on_train_start`.
    pub fn train_start(self) -> Self {
        self.with(EventKind::TrainStart)
    }

    /// `on_epoch_start`.
    pub fn epoch_start(self) -> Self {
        self.with(EventKind::EpochStart)
    }

    /// `on_batch_start`, every step unless [`Subscriptions::batch_every`] says otherwise.
    pub fn batch_start(self) -> Self {
        self.with(EventKind::BatchStart)
    }

    /// `on_batch_end`, every step unless [`Subscriptions::batch_every`] says otherwise.
    pub fn batch_end(self) -> Self {
        self.with(EventKind::BatchEnd)
    }

    /// Deliver batch-start and batch-end only every `n`-th global step (0 and 1: every step).
    pub fn batch_every(mut self, n: u32) -> Self {
        self.batch_every = n;
        self
    }

    /// `on_batch_end` every `n`-th global step: shorthand for `.batch_end().batch_every(n)`.
    pub fn batch_end_every(self, n: u32) -> Self {
        self.batch_end().batch_every(n)
    }

    /// `on_validation_end`.
    pub fn validation_end(self) -> Self {
        self.with(EventKind::ValidationEnd)
    }

    /// `on_epoch_end`.
    pub fn epoch_end(self) -> Self {
        self.with(EventKind::EpochEnd)
    }

    /// `on_checkpoint_saved`.
    pub fn checkpoint_saved(self) -> Self {
        self.with(EventKind::CheckpointSaved)
    }

    /// `on_train_end`.
    pub fn train_end(self) -> Self {
        self.with(EventKind::TrainEnd)
    }

    /// `on_fault`.
    pub fn fault(self) -> Self {
        self.with(EventKind::Fault)
    }

    /// Whether `kind` is subscribed.
    pub fn contains(&self, kind: EventKind) -> bool {
        self.events.contains(&kind)
    }

    /// The subscribed events, in the order they were added.
    pub fn events(&self) -> &[EventKind] {
        &self.events
    }

    /// The batch interval given to [`Subscriptions::batch_every`] (0 if never set).
    pub fn batch_interval(&self) -> u32 {
        self.batch_every
    }

    /// The WIT registration sent to the host.
    pub(crate) fn into_registration(self) -> Registration {
        Registration {
            events: self.events,
            batch_every: self.batch_every,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_collects_events_once_with_the_batch_interval() {
        let s = Subscriptions::new()
            .epoch_end()
            .batch_end_every(10)
            .epoch_end();
        assert_eq!(s.events(), &[EventKind::EpochEnd, EventKind::BatchEnd]);
        assert!(s.contains(EventKind::BatchEnd));
        assert!(!s.contains(EventKind::Fault));
        let r = s.into_registration();
        assert_eq!(r.batch_every, 10);
    }
}
