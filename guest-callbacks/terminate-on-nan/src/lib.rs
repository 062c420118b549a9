//! `terminate-on-nan`: stops training as soon as the loss is NaN or infinite.
//!
//! Like Keras' `TerminateOnNaN` it reacts to the first non-finite batch loss, but it is never
//! called per batch: the host checks every batch's loss natively and reports the first
//! non-finite one of an epoch as a `non-finite-loss` fault event, right after that step, which
//! is the only event this callback subscribes to. Its stop decision is applied at the same fixed
//! point a `batch-end` subscription would give, for no guest call per batch. It takes no
//! parameters.
//!
//! Decision: `stop-training("terminate-on-nan: loss is NaN at epoch E, step S")`, once.

use trainrt_guest::{
    Callback, Config, Decisions, FaultInfo, FaultKind, Subscriptions, export_callback,
};

/// Stops training on a non-finite loss.
#[derive(Debug, Default)]
pub struct TerminateOnNan {
    /// Set once the stop decision was made, so that a later report (the host stops only after
    /// the step) does not repeat it.
    stopped: bool,
}

impl Callback for TerminateOnNan {
    fn init(config: &mut Config) -> Result<(Self, Subscriptions), String> {
        config.finish()?;
        Ok((TerminateOnNan::default(), Subscriptions::new().fault()))
    }

    fn on_fault(&mut self, info: &FaultInfo, out: &mut Decisions) {
        // Other faults (I/O, another callback) are not this callback's business.
        if info.kind == FaultKind::NonFiniteLoss && !self.stopped {
            self.stopped = true;
            out.stop(format!("terminate-on-nan: {}", info.message));
        }
    }
}

export_callback!(TerminateOnNan);

#[cfg(test)]
mod tests {
    use super::*;
    use trainrt_guest::{Decision, EventKind};

    fn new() -> Result<(TerminateOnNan, Subscriptions), String> {
        TerminateOnNan::init(&mut Config::from_pairs(&[])?)
    }

    #[test]
    fn subscribes_to_faults_only_never_per_batch() -> Result<(), String> {
        let (_, subs) = new()?;
        assert_eq!(subs.events(), &[EventKind::Fault]);
        Ok(())
    }

    fn fault(kind: FaultKind, message: &str) -> FaultInfo {
        FaultInfo {
            kind,
            message: message.into(),
            epoch: 1,
            step: 50,
        }
    }

    #[test]
    fn only_non_finite_loss_faults_stop_and_only_once() -> Result<(), String> {
        let (mut cb, _) = new()?;
        let mut out = Decisions::new();
        cb.on_fault(&fault(FaultKind::IoError, "disk full"), &mut out);
        cb.on_fault(&fault(FaultKind::CallbackFault, "logger trapped"), &mut out);
        assert!(out.is_empty());
        let nan = fault(FaultKind::NonFiniteLoss, "loss is NaN at epoch 1, step 50");
        cb.on_fault(&nan, &mut out);
        cb.on_fault(&nan, &mut out);
        assert_eq!(
            out.into_vec(),
            vec![Decision::StopTraining(
                "terminate-on-nan: loss is NaN at epoch 1, step 50".into()
            )]
        );
        Ok(())
    }

    #[test]
    fn parameters_are_rejected() -> Result<(), String> {
        let err = TerminateOnNan::init(&mut Config::from_pairs(&[("patience", "1")])?).err();
        assert_eq!(
            err.as_deref(),
            Some("unknown parameter 'patience'; this callback takes no parameters")
        );
        Ok(())
    }
}
