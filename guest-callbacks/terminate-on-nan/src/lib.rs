//! `terminate-on-nan`: stops training as soon as the loss is NaN or infinite.
//!
//! Like Keras' `TerminateOnNaN`, it checks every batch's loss (it subscribes to `batch-end` on
//! every step) and also reacts to the host's `non-finite-loss` fault. It takes no parameters.
//!
//! Decision: `stop-training("terminate-on-nan: loss is NaN at epoch E step S")`, once.

use trainrt_guest::{
    BatchMetrics, Callback, Config, Decisions, FaultInfo, FaultKind, Subscriptions, export_callback,
};

/// Stops training on a non-finite loss.
#[derive(Debug, Default)]
pub struct TerminateOnNan {
    /// Set once the stop decision was made, so that the remaining events of the step (the host
    /// stops only after it) do not repeat it.
    stopped: bool,
}

impl TerminateOnNan {
    fn stop(&mut self, reason: String, out: &mut Decisions) {
        if !self.stopped {
            self.stopped = true;
            out.stop(reason);
        }
    }
}

impl Callback for TerminateOnNan {
    fn init(config: &mut Config) -> Result<(Self, Subscriptions), String> {
        config.finish()?;
        let subscriptions = Subscriptions::new().batch_end().fault();
        Ok((TerminateOnNan::default(), subscriptions))
    }

    fn on_batch_end(&mut self, m: &BatchMetrics, out: &mut Decisions) {
        if !m.loss.is_finite() {
            let what = if m.loss.is_nan() { "NaN" } else { "infinite" };
            let reason = format!(
                "terminate-on-nan: loss is {what} at epoch {} step {}",
                m.epoch, m.step
            );
            self.stop(reason, out);
        }
    }

    fn on_fault(&mut self, info: &FaultInfo, out: &mut Decisions) {
        // Other faults (I/O, another callback) are not this callback's business.
        if info.kind == FaultKind::NonFiniteLoss {
            let reason = format!(
                "terminate-on-nan: loss is not finite at epoch {} step {} ({})",
                info.epoch, info.step, info.message
            );
            self.stop(reason, out);
        }
    }
}

export_callback!(TerminateOnNan);

#[cfg(test)]
mod tests {
    use super::*;
    use trainrt_guest::{Decision, EventKind};

    fn batch(step: u64, loss: f64) -> BatchMetrics {
        BatchMetrics {
            epoch: 2,
            batch: 5,
            step,
            loss,
            accuracy: 0.5,
            lr: 0.1,
            grad_norm: 1.0,
        }
    }

    fn new() -> Result<(TerminateOnNan, Subscriptions), String> {
        TerminateOnNan::init(&mut Config::from_pairs(&[])?)
    }

    #[test]
    fn subscribes_to_every_batch_end_and_faults() -> Result<(), String> {
        let (_, subs) = new()?;
        assert_eq!(subs.events(), &[EventKind::BatchEnd, EventKind::Fault]);
        assert!(subs.batch_interval() <= 1);
        Ok(())
    }

    #[test]
    fn finite_losses_are_ignored_and_nan_stops_once() -> Result<(), String> {
        let (mut cb, _) = new()?;
        let mut out = Decisions::new();
        cb.on_batch_end(&batch(204, 0.7), &mut out);
        cb.on_batch_end(&batch(205, 1e30), &mut out);
        assert!(out.is_empty());
        cb.on_batch_end(&batch(206, f64::NAN), &mut out);
        cb.on_batch_end(&batch(207, f64::NAN), &mut out);
        assert_eq!(
            out.into_vec(),
            vec![Decision::StopTraining(
                "terminate-on-nan: loss is NaN at epoch 2 step 206".into()
            )]
        );
        Ok(())
    }

    #[test]
    fn infinite_loss_stops() -> Result<(), String> {
        let (mut cb, _) = new()?;
        let mut out = Decisions::new();
        cb.on_batch_end(&batch(9, f64::INFINITY), &mut out);
        assert_eq!(
            out.into_vec(),
            vec![Decision::StopTraining(
                "terminate-on-nan: loss is infinite at epoch 2 step 9".into()
            )]
        );
        Ok(())
    }

    #[test]
    fn only_non_finite_loss_faults_stop() -> Result<(), String> {
        let (mut cb, _) = new()?;
        let fault = |kind| FaultInfo {
            kind,
            message: "loss is NaN".into(),
            epoch: 1,
            step: 50,
        };
        let mut out = Decisions::new();
        cb.on_fault(&fault(FaultKind::IoError), &mut out);
        cb.on_fault(&fault(FaultKind::CallbackFault), &mut out);
        assert!(out.is_empty());
        cb.on_fault(&fault(FaultKind::NonFiniteLoss), &mut out);
        assert_eq!(
            out.into_vec(),
            vec![Decision::StopTraining(
                "terminate-on-nan: loss is not finite at epoch 1 step 50 (loss is NaN)".into()
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
