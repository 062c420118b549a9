//! One callback: where it comes from ([`CallbackSpec`]), how to run it ([`CallbackOptions`]), its
//! compiled form ([`CompiledCallback`], once per file) and a live instance ([`CallbackInstance`],
//! once per run) with the call wrapper that enforces the sandbox's limits on every call.

mod instance;
mod options;
mod spec;

pub use self::instance::{CallStats, CallbackInstance};
pub use self::options::{CallbackOptions, DEFAULT_MAX_RESTARTS, FaultPolicy};
pub use self::spec::CallbackSpec;

use std::path::PathBuf;

use wasmtime::component::Component;

use crate::contract::CallbackWorldPre;
use crate::sandbox::{Fault, GuestState, Limits, Sandbox, SandboxError};

/// Errors loading or starting a callback. These are the user's to fix (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    /// The `--callback` argument is malformed.
    #[error("invalid callback spec '{spec}': {message}")]
    InvalidSpec {
        /// The argument as given.
        spec: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The callback file could not be read.
    #[error("cannot read callback {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a usable component.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The callback's `init` rejected its parameters.
    #[error("callback {name} rejected its parameters: {message}")]
    Rejected {
        /// The callback.
        name: String,
        /// The callback's own explanation.
        message: String,
    },
    /// The callback faulted while starting.
    #[error("callback {name} faulted in {during}: {fault}")]
    StartFault {
        /// The callback.
        name: String,
        /// `init` or `restore-state`.
        during: &'static str,
        /// What happened.
        fault: Fault,
    },
}

/// A callback compiled for the sandbox's engine, ready to instantiate many times.
pub struct CompiledCallback {
    name: String,
    component: Component,
    pub(crate) pre: CallbackWorldPre<GuestState>,
    /// Whether it imports WASI stdout/stderr, whose output the host then forwards.
    pub(crate) uses_stdio: bool,
}

impl CompiledCallback {
    /// Checks the component's inert WASI imports (`wasi:filesystem`, `wasi:sockets`) against the
    /// operator's grant; see [`crate::sandbox::ImportVerdict::Inert`].
    pub fn check_grants(
        &self,
        sandbox: &Sandbox,
        name: &str,
        inert_wasi: bool,
    ) -> Result<(), SandboxError> {
        crate::sandbox::check_grants(sandbox, &self.component, name, inert_wasi)
    }

    /// Compiles and links a component, rejecting anything that is not a callback-world component
    /// the sandbox can serve. Compiles under the default compile limits.
    pub fn new(sandbox: &Sandbox, name: &str, bytes: &[u8]) -> Result<Self, SandboxError> {
        Self::with_limits(sandbox, name, bytes, &Limits::default())
    }

    /// As [`CompiledCallback::new`], compiling under `limits.compile_cpu_time` and
    /// `limits.compile_memory_bytes` (when the sandbox compiles in a child process).
    pub fn with_limits(
        sandbox: &Sandbox,
        name: &str,
        bytes: &[u8],
        limits: &Limits,
    ) -> Result<Self, SandboxError> {
        let component = crate::sandbox::compile(sandbox, name, bytes, limits)?;
        let invalid = |message: String| SandboxError::InvalidComponent {
            name: name.to_string(),
            message,
        };
        let instance_pre = sandbox
            .linker()
            .instantiate_pre(&component)
            .map_err(|e| invalid(format!("cannot link: {}", crate::sandbox::describe(&e))))?;
        let pre = CallbackWorldPre::new(instance_pre).map_err(|e| {
            invalid(format!(
                "does not export the callback interface {}: {}",
                crate::contract::EXPORT_INTERFACE,
                crate::sandbox::describe(&e)
            ))
        })?;
        let uses_stdio = component
            .component_type()
            .imports(sandbox.engine())
            .any(|(n, _)| n.starts_with("wasi:cli/stdout") || n.starts_with("wasi:cli/stderr"));
        Ok(Self {
            name: name.to_string(),
            component,
            pre,
            uses_stdio,
        })
    }

    /// The callback's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The compiled component.
    pub fn component(&self) -> &Component {
        &self.component
    }
}
