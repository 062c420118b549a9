//! Write trainrt training callbacks in plain Rust.
//!
//! A callback is a type implementing [`Callback`]; [`export_callback!`] turns it into the
//! WebAssembly exports of the `trainrt:callbacks/callback-world` contract (`wit/callbacks.wit`).
//! Build the crate as a `cdylib` for `wasm32-unknown-unknown`; the host makes it a component.
//!
//! ```
//! use trainrt_guest::{Callback, Config, Decisions, EpochMetrics, Subscriptions, export_callback};
//!
//! /// Stops training once the loss drops below a threshold.
//! struct StopBelow {
//!     threshold: f64,
//! }
//!
//! impl Callback for StopBelow {
//!     fn init(config: &mut Config) -> Result<(Self, Subscriptions), String> {
//!         let threshold = config.f64("threshold", 0.01)?;
//!         config.finish()?;
//!         Ok((StopBelow { threshold }, Subscriptions::new().epoch_end()))
//!     }
//!
//!     fn on_epoch_end(&mut self, m: &EpochMetrics<'_>, out: &mut Decisions) {
//!         if m.get("loss").is_some_and(|loss| loss < self.threshold) {
//!             out.stop(format!("stop-below: loss under {}", self.threshold));
//!         }
//!     }
//! }
//!
//! export_callback!(StopBelow);
//! ```
//!
//! The callback's logic stays testable natively: build a [`Config`] with
//! [`Config::from_pairs`], call the [`Callback`] methods and inspect [`Decisions::into_vec`].
//! On non-wasm targets [`log`] records lines instead of calling the host.

#[doc(hidden)]
pub mod __export;
#[doc(hidden)]
pub mod bindings;
mod callback;
mod config;
mod decisions;
mod fast_format;
pub mod log;
mod metrics;
pub mod monitor;
pub mod state;
mod subscriptions;
pub mod testing;

pub use bindings::trainrt::callbacks::host::Level;
pub use bindings::trainrt::callbacks::types::{
    BatchInfo, BatchMetrics, CheckpointInfo, Decision, EpochInfo, EventKind, FaultInfo, FaultKind,
    Metric, Outcome, RunInfo, TrainEndInfo, ValidationMetrics,
};
pub use callback::Callback;
pub use config::{Config, param_error};
pub use decisions::Decisions;
pub use fast_format::text_writer::{TextWriter, push_short};
pub use fast_format::{format_metric, push_metric, push_uint};
pub use metrics::EpochMetrics;
pub use subscriptions::Subscriptions;

/// Exports a [`Callback`] type as the callback component's implementation.
///
/// Use it once per callback crate, at the crate root. The instance created by
/// [`Callback::init`] lives in a single-threaded global for the life of the component; events
/// that arrive before a successful `init` return no decisions. Expands to nothing on non-wasm
/// targets, where the crate is only unit-tested.
#[macro_export]
macro_rules! export_callback {
    ($ty:ty) => {
        // An anonymous const keeps the glue out of the crate's namespace while `$ty` still
        // resolves where the macro was invoked. The canonical-ABI exports are unsafe code, and
        // wasm-only: native linkers reject their `pkg:iface/name#func` symbol names, and native
        // builds exist only for unit tests.
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        const _: () = {
            ::std::thread_local! {
                static INSTANCE: $crate::__export::Slot<$ty> =
                    const { $crate::__export::Slot::new() };
            }

            struct ExportedCallback;

            impl $crate::__export::Guest for ExportedCallback {
                fn init(
                    config: ::std::vec::Vec<$crate::__export::ConfigEntry>,
                ) -> ::std::result::Result<$crate::__export::Registration, ::std::string::String>
                {
                    INSTANCE.with(|slot| slot.init(config))
                }
                fn on_train_start(info: $crate::RunInfo) -> ::std::vec::Vec<$crate::Decision> {
                    INSTANCE.with(|slot| slot.on_train_start(info))
                }
                fn on_epoch_start(info: $crate::EpochInfo) -> ::std::vec::Vec<$crate::Decision> {
                    INSTANCE.with(|slot| slot.on_epoch_start(info))
                }
                fn on_batch_start(info: $crate::BatchInfo) -> ::std::vec::Vec<$crate::Decision> {
                    INSTANCE.with(|slot| slot.on_batch_start(info))
                }
                fn on_batch_end(
                    metrics: $crate::BatchMetrics,
                ) -> ::std::vec::Vec<$crate::Decision> {
                    INSTANCE.with(|slot| slot.on_batch_end(metrics))
                }
                fn on_validation_end(
                    metrics: $crate::ValidationMetrics,
                ) -> ::std::vec::Vec<$crate::Decision> {
                    INSTANCE.with(|slot| slot.on_validation_end(metrics))
                }
                fn on_epoch_end(
                    metrics: $crate::__export::EpochValues,
                ) -> ::std::vec::Vec<$crate::Decision> {
                    INSTANCE.with(|slot| slot.on_epoch_end(metrics))
                }
                fn on_checkpoint_saved(
                    info: $crate::CheckpointInfo,
                ) -> ::std::vec::Vec<$crate::Decision> {
                    INSTANCE.with(|slot| slot.on_checkpoint_saved(info))
                }
                fn on_train_end(info: $crate::TrainEndInfo) -> ::std::vec::Vec<$crate::Decision> {
                    INSTANCE.with(|slot| slot.on_train_end(info))
                }
                fn on_fault(info: $crate::FaultInfo) -> ::std::vec::Vec<$crate::Decision> {
                    INSTANCE.with(|slot| slot.on_fault(info))
                }
                fn snapshot_state() -> ::std::vec::Vec<u8> {
                    INSTANCE.with(|slot| slot.snapshot_state())
                }
                fn restore_state(
                    state: ::std::vec::Vec<u8>,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    INSTANCE.with(|slot| slot.restore_state(state))
                }
            }

    $crate::bindings::__export_raw!(ExportedCallback with_types_in $crate::bindings);
        };
    };
}
