//! The callback ABI, generated from `wit/callbacks.wit`: the only place the host runs `bindgen!`.
//!
//! The rest of the runtime uses the re-exported types below; the generated glue stays private.

#[allow(missing_docs, unsafe_code, clippy::all)]
mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "callback-world",
        additional_derives: [serde::Serialize, serde::Deserialize, PartialEq],
    });
}

/// The host's imports, implemented by the sandbox.
pub(crate) use generated::trainrt::callbacks::host::Host as HostImports;
/// Log severity of the `log` host import.
pub use generated::trainrt::callbacks::host::Level;
/// The (function-less) shared types interface, which the linker still wants implemented.
pub(crate) use generated::trainrt::callbacks::types::Host as TypesImports;
/// Bindings of an instantiated callback, and the pre-linked form used to instantiate it fast.
pub(crate) use generated::{CallbackWorld, CallbackWorldPre};

/// Records and variants shared by host and guests; see the WIT file for field docs.
pub use generated::trainrt::callbacks::types::{
    BatchInfo, BatchMetrics, CheckpointInfo, ConfigEntry, Decision, EpochInfo, EpochMetrics,
    EventKind, FaultInfo, FaultKind, Metric, Outcome, Registration, RunInfo, TrainEndInfo,
    ValidationMetrics,
};

/// The WIT package and world a callback component must target.
pub const WORLD: &str = "trainrt:callbacks/callback-world@0.1.0";
/// The WIT interface a callback component must export.
pub const EXPORT_INTERFACE: &str = "trainrt:callbacks/callback@0.1.0";
/// The WIT interface the host offers to callbacks.
pub const HOST_INTERFACE: &str = "trainrt:callbacks/host@0.1.0";
/// The contract's source, for tools that generate guest bindings.
pub const WIT_SOURCE: &str = include_str!("../../wit/callbacks.wit");
