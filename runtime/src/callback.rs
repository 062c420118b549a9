//! One callback: where it comes from ([`CallbackSpec`]), its compiled form ([`CompiledCallback`],
//! once per file) and a live instance ([`CallbackInstance`], once per run) with the call wrapper
//! that enforces the sandbox's limits on every call.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use wasmtime::Store;
use wasmtime::component::Component;

use crate::bundled;
use crate::clock;
use crate::contract::{CallbackWorld, CallbackWorldPre, ConfigEntry, Decision};
use crate::events::{Event, Subscriptions};
use crate::sandbox::{
    Deadline, FaultKind, GuestState, Limits, LogLine, Sandbox, SandboxError, classify,
};

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

/// Where a callback comes from and its `key=value` parameters, parsed from
/// `NAME[:k=v,...]` or `PATH.wasm[:k=v,...]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct CallbackSpec {
    /// A bundled callback's name, or a path to a `.wasm` component.
    pub source: String,
    /// Parameters passed to the callback's `init`, in order.
    pub params: Vec<(String, String)>,
}

impl std::str::FromStr for CallbackSpec {
    type Err = CallbackError;

    fn from_str(spec: &str) -> Result<Self, CallbackError> {
        let invalid = |message: String| CallbackError::InvalidSpec {
            spec: spec.to_string(),
            message,
        };
        // A path may contain ':' itself; parameters start after the `.wasm` extension.
        let (source, params) = match spec.find(".wasm:") {
            Some(i) => (&spec[..i + 5], Some(&spec[i + 6..])),
            None if spec.ends_with(".wasm") => (spec, None),
            None => match spec.split_once(':') {
                Some((s, p)) => (s, Some(p)),
                None => (spec, None),
            },
        };
        if source.is_empty() {
            return Err(invalid("missing callback name or path before ':'".into()));
        }
        if !source.ends_with(".wasm") && !bundled::names().any(|n| n == source) {
            let known: Vec<&str> = bundled::names().collect();
            return Err(invalid(format!(
                "'{source}' is neither a bundled callback ({}) nor a path ending in .wasm",
                known.join(", ")
            )));
        }
        let mut parsed = Vec::new();
        for pair in params.unwrap_or("").split(',').filter(|p| !p.is_empty()) {
            let Some((k, v)) = pair.split_once('=') else {
                return Err(invalid(format!("parameter '{pair}' is not key=value")));
            };
            let k = k.trim();
            if k.is_empty() {
                return Err(invalid(format!("parameter '{pair}' has an empty key")));
            }
            parsed.push((k.to_string(), v.trim().to_string()));
        }
        Ok(Self {
            source: source.to_string(),
            params: parsed,
        })
    }
}

impl std::fmt::Display for CallbackSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)?;
        for (i, (k, v)) in self.params.iter().enumerate() {
            write!(f, "{}{k}={v}", if i == 0 { ':' } else { ',' })?;
        }
        Ok(())
    }
}

impl CallbackSpec {
    /// The callback's display name: the bundled name or the file's stem.
    pub fn name(&self) -> String {
        if self.source.ends_with(".wasm") {
            Path::new(&self.source)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            self.source.clone()
        }
    }

    /// The component's bytes: embedded for bundled callbacks, read from disk otherwise.
    pub fn load_bytes(&self, limits: &Limits) -> Result<Vec<u8>, CallbackError> {
        if let Some(bytes) = bundled::component(&self.source) {
            return Ok(bytes.to_vec());
        }
        let path = PathBuf::from(&self.source);
        let meta = std::fs::metadata(&path).map_err(|source| CallbackError::Read {
            path: path.clone(),
            source,
        })?;
        if meta.len() > limits.max_component_bytes as u64 {
            return Err(SandboxError::InvalidComponent {
                name: self.name(),
                message: format!(
                    "component is {} bytes, over the limit of {} bytes (raise limits.max_component_bytes)",
                    meta.len(),
                    limits.max_component_bytes
                ),
            }
            .into());
        }
        std::fs::read(&path).map_err(|source| CallbackError::Read { path, source })
    }
}

/// A callback compiled for the sandbox's engine, ready to instantiate many times.
pub struct CompiledCallback {
    name: String,
    component: Component,
    pre: CallbackWorldPre<GuestState>,
    /// Whether it imports WASI stdout/stderr, whose output the host then forwards.
    uses_stdio: bool,
}

impl CompiledCallback {
    /// Checks the component's inert WASI imports (`wasi:filesystem`, `wasi:sockets`) against the
    /// operator's grant; see [`crate::inspect::ImportVerdict::Inert`].
    pub fn check_grants(
        &self,
        sandbox: &Sandbox,
        name: &str,
        inert_wasi: bool,
    ) -> Result<(), SandboxError> {
        crate::inspect::check_grants(sandbox, &self.component, name, inert_wasi)
    }

    /// Compiles and links a component, rejecting anything that is not a callback-world component
    /// the sandbox can serve.
    pub fn new(sandbox: &Sandbox, name: &str, bytes: &[u8]) -> Result<Self, SandboxError> {
        let component = crate::inspect::compile(sandbox, name, bytes)?;
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

/// A callback failure: its kind and what happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fault {
    /// The kind, for policy and statistics.
    pub kind: FaultKind,
    /// A human-readable description.
    pub message: String,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl Fault {
    pub(crate) fn new(kind: FaultKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// Counters kept for each callback and reported in `summary.json`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CallStats {
    /// Guest calls made (init and state calls included).
    pub calls: u64,
    /// Total time spent in guest calls, summed in nanoseconds (most calls take under a
    /// microsecond) and reported in `summary.json` as whole microseconds.
    #[serde(rename = "total_time_us", serialize_with = "as_micros")]
    pub total_time_ns: u64,
    /// Fuel (wasm instructions, roughly) used in total.
    pub fuel_used: u64,
    /// Decisions returned.
    pub decisions: u64,
}

fn as_micros<S: serde::Serializer>(ns: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(ns.saturating_add(500) / 1000)
}

/// A live callback for one run: its own store, bindings and subscription filter.
//
// `repr(C)` keeps the fields in the order written: those every event call reads or writes first,
// together. A per-batch call usually finds them evicted from the first-level cache by the
// training step before it, so each further cache line they were spread over cost a miss per call.
#[repr(C)]
pub struct CallbackInstance {
    /// First although only `init` reads it: `Option<CallbackInstance>` (a slot's instance, which
    /// every event checks for) is told apart by a niche in a field, and the compiler takes this
    /// one's (a `Vec`'s capacity); at the end of the struct, checking would cost a cache line.
    config: Vec<ConfigEntry>,
    // Touched by every event call.
    subscriptions: Subscriptions,
    /// `limits.call_timeout` in epoch ticks.
    call_deadline: Deadline,
    store: Store<GuestState>,
    /// Counters; `total_time_ns` is filled from `time_ticks` when read.
    stats: CallStats,
    /// Time inside guest calls, in [`clock`] ticks.
    time_ticks: u64,
    /// What the last `snapshot-state` returned, kept while the instance has not been called
    /// since. A guest's state changes only inside its own calls (it has no threads, and the host
    /// never touches its memory between calls), so asking again would return the same bytes: a
    /// callback that heard nothing since the last checkpoint costs the next one no guest call.
    unchanged_snapshot: Option<Vec<u8>>,
    limits: Limits,
    bindings: CallbackWorld,
    // The rest.
    /// `limits.init_timeout` in epoch ticks.
    init_deadline: Deadline,
    compiled: Arc<CompiledCallback>,
}

impl CallbackInstance {
    /// Instantiates the callback in a fresh store and runs its `init` with `params`.
    pub fn start(
        sandbox: &Sandbox,
        compiled: Arc<CompiledCallback>,
        params: &[(String, String)],
        limits: &Limits,
    ) -> Result<Self, CallbackError> {
        let name = compiled.name.clone();
        let start_fault = |during, fault| CallbackError::StartFault {
            name: name.clone(),
            during,
            fault,
        };
        let mut store = sandbox.new_store(limits);
        store.data_mut().capture_stdio = compiled.uses_stdio;
        let init_deadline = sandbox.deadline(limits.init_timeout);
        sandbox.arm(&mut store, init_deadline, limits.fuel_per_call);
        let bindings = guard(|| compiled.pre.instantiate(&mut store))
            .map_err(|f| start_fault("instantiation", f))?;
        let config: Vec<ConfigEntry> = params
            .iter()
            .map(|(k, v)| ConfigEntry {
                key: k.clone(),
                value: v.clone(),
            })
            .collect();
        let mut this = Self {
            compiled: compiled.clone(),
            config,
            limits: limits.clone(),
            call_deadline: sandbox.deadline(limits.call_timeout),
            init_deadline,
            store,
            bindings,
            subscriptions: Subscriptions::default(),
            stats: CallStats::default(),
            time_ticks: 0,
            unchanged_snapshot: None,
        };
        let config = this.config.clone();
        let registration = this
            .call(sandbox, init_deadline, |b, s| {
                b.trainrt_callbacks_callback().call_init(s, &config)
            })
            .map_err(|f| start_fault("init", f))?;
        match registration {
            Ok(r) => this.subscriptions = Subscriptions::new(&r.events, r.batch_every),
            Err(message) => {
                return Err(CallbackError::Rejected {
                    name: compiled.name.clone(),
                    message: crate::sandbox::printable(&message, 1024),
                });
            }
        }
        Ok(this)
    }

    /// The callback's name.
    pub fn name(&self) -> &str {
        &self.compiled.name
    }

    /// What the callback subscribed to at init.
    pub fn subscriptions(&self) -> Subscriptions {
        self.subscriptions
    }

    /// Call counters so far.
    pub fn stats(&self) -> CallStats {
        CallStats {
            total_time_ns: clock::ticks_to_ns(self.time_ticks),
            ..self.stats
        }
    }

    /// The compiled callback this instance runs.
    pub fn compiled(&self) -> &Arc<CompiledCallback> {
        &self.compiled
    }

    /// The parameters the callback was started with.
    pub fn params(&self) -> Vec<(String, String)> {
        self.config
            .iter()
            .map(|c| (c.key.clone(), c.value.clone()))
            .collect()
    }

    /// Delivers one event (the caller has checked the subscription) and returns its decisions.
    /// After an `Err`, the instance's store is poisoned: drop it.
    pub fn deliver(&mut self, sandbox: &Sandbox, event: &Event) -> Result<Vec<Decision>, Fault> {
        let decisions = self.call(sandbox, self.call_deadline, |b, s| {
            let g = b.trainrt_callbacks_callback();
            match event {
                Event::TrainStart(i) => g.call_on_train_start(s, i),
                Event::EpochStart(i) => g.call_on_epoch_start(s, *i),
                Event::BatchStart(i) => g.call_on_batch_start(s, *i),
                Event::BatchEnd(m) => g.call_on_batch_end(s, *m),
                Event::ValidationEnd(m) => g.call_on_validation_end(s, *m),
                Event::EpochEnd(m) => g.call_on_epoch_end(s, m),
                Event::CheckpointSaved(i) => g.call_on_checkpoint_saved(s, i),
                Event::TrainEnd(i) => g.call_on_train_end(s, i),
                Event::Fault(i) => g.call_on_fault(s, i),
            }
        })?;
        if decisions.len() > self.limits.max_decisions_per_call {
            return Err(Fault::new(
                FaultKind::InvalidDecision,
                format!(
                    "returned {} decisions in one call (limit {})",
                    decisions.len(),
                    self.limits.max_decisions_per_call
                ),
            ));
        }
        self.stats.decisions += decisions.len() as u64;
        Ok(decisions)
    }

    /// The callback's state snapshot, size-checked. Calls the guest only if it was called since
    /// its last snapshot.
    pub fn snapshot(&mut self, sandbox: &Sandbox) -> Result<Vec<u8>, Fault> {
        if let Some(state) = &self.unchanged_snapshot {
            return Ok(state.clone());
        }
        let state = self.call(sandbox, self.call_deadline, |b, s| {
            b.trainrt_callbacks_callback().call_snapshot_state(s)
        })?;
        if state.len() > self.limits.max_state_bytes {
            return Err(Fault::new(
                FaultKind::InvalidOutput,
                format!(
                    "state snapshot of {} bytes exceeds the limit of {} bytes",
                    state.len(),
                    self.limits.max_state_bytes
                ),
            ));
        }
        self.unchanged_snapshot = Some(state.clone());
        Ok(state)
    }

    /// Restores a state snapshot taken earlier (on resume, or after a restart).
    pub fn restore(&mut self, sandbox: &Sandbox, state: &[u8]) -> Result<(), Fault> {
        match self.call(sandbox, self.init_deadline, |b, s| {
            b.trainrt_callbacks_callback().call_restore_state(s, state)
        })? {
            Ok(()) => Ok(()),
            Err(message) => Err(Fault::new(
                FaultKind::InvalidOutput,
                format!(
                    "rejected its saved state: {}",
                    crate::sandbox::printable(&message, 1024)
                ),
            )),
        }
    }

    /// Lines the callback logged since the last call to this.
    pub fn take_logs(&mut self) -> Vec<LogLine> {
        self.store.data_mut().take_logs()
    }

    /// Whether [`CallbackInstance::drain_logs`] may yield anything (false after a call that
    /// logged nothing and wrote no output).
    pub fn may_have_logs(&self) -> bool {
        self.store.data().may_have_logs()
    }

    /// Removes and yields the lines the callback logged since the last call, keeping the
    /// buffer for the next ones.
    pub fn drain_logs(&mut self) -> impl Iterator<Item = LogLine> + '_ {
        self.store.data_mut().drain_logs()
    }

    /// Output bytes dropped for exceeding the log budgets.
    pub fn dropped_log_bytes(&self) -> u64 {
        self.store.data().dropped_log_bytes()
    }

    /// Runs one guest call under the deadline and fuel budget, catching traps and panics.
    fn call<R>(
        &mut self,
        sandbox: &Sandbox,
        deadline: Deadline,
        f: impl FnOnce(&CallbackWorld, &mut Store<GuestState>) -> wasmtime::Result<R>,
    ) -> Result<R, Fault> {
        let fuel = self.limits.fuel_per_call;
        // Whatever this call is, the guest may change its state in it.
        self.unchanged_snapshot = None;
        self.store.data_mut().begin_call(&self.limits);
        sandbox.arm(&mut self.store, deadline, fuel);
        let started = clock::now();
        let (bindings, store) = (&self.bindings, &mut self.store);
        let result = guard(|| f(bindings, store));
        self.time_ticks = self.time_ticks.saturating_add(started.ticks_since());
        self.stats.calls += 1;
        self.stats.fuel_used += fuel.saturating_sub(self.store.get_fuel().unwrap_or(0));
        result
    }
}

/// Runs a wasmtime call, turning an error into a classified fault and a panic (in wasmtime or a
/// host function) into a host-error fault instead of a dead process.
fn guard<R>(f: impl FnOnce() -> wasmtime::Result<R>) -> Result<R, Fault> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(Fault::new(classify(&e), crate::sandbox::describe(&e))),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(Fault::new(
                FaultKind::HostError,
                format!("host panicked while serving the callback: {what}"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bundled_names_and_paths_with_params() {
        let s: CallbackSpec = "early-stopping:patience=3,monitor=val_loss"
            .parse()
            .unwrap();
        assert_eq!(s.source, "early-stopping");
        assert_eq!(
            s.params,
            vec![
                ("patience".into(), "3".into()),
                ("monitor".into(), "val_loss".into())
            ]
        );
        let s: CallbackSpec = "dir:with:colons/my.wasm:a=1".parse().unwrap();
        assert_eq!(s.source, "dir:with:colons/my.wasm");
        assert_eq!(s.params, vec![("a".into(), "1".into())]);
        assert_eq!(s.name(), "my");
        let s: CallbackSpec = "./cb.wasm".parse().unwrap();
        assert!(s.params.is_empty());
        assert_eq!(s.to_string(), "./cb.wasm");
    }

    #[test]
    fn rejects_bad_specs_with_reasons() {
        let e = "nope".parse::<CallbackSpec>().unwrap_err().to_string();
        assert!(
            e.contains("neither a bundled callback") && e.contains("early-stopping"),
            "{e}"
        );
        let e = "logger:verbose"
            .parse::<CallbackSpec>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("not key=value"), "{e}");
        let e = ":a=1".parse::<CallbackSpec>().unwrap_err().to_string();
        assert!(e.contains("missing callback name"), "{e}");
    }
}
