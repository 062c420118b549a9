//! `trainrt check` and `trainrt callbacks`: inspect callback components.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};
use serde_json::json;
use trainrt::bundled;
use trainrt::callback::{CallbackInstance, CompiledCallback};
use trainrt::config::{apply_sandbox_flags, callback_options};
use trainrt::events::kind_name;
use trainrt::inspect;
use trainrt::sandbox::{ImportVerdict, WASM_STACK_BYTES};

use crate::Failure;

/// `trainrt check FILE.wasm[:k=v,...]`
#[derive(Args)]
pub struct CheckArgs {
    /// A `.wasm` component (or a bundled callback's name), with optional `:key=value,...`
    /// parameters passed to its init.
    spec: String,
    /// Sandbox options to check under, as for `trainrt run`: `key=value,...`. Repeatable.
    #[arg(long = "sandbox", value_name = "KEY=VALUE,...")]
    sandbox: Vec<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

impl CheckArgs {
    /// Validates the component, starts it with its parameters, and prints what it is.
    pub fn execute(self) -> Result<u8, Failure> {
        let mut entries = [callback_options(&self.spec).map_err(Failure::usage)?];
        apply_sandbox_flags(&mut entries, &self.sandbox).map_err(Failure::usage)?;
        let [options] = entries;
        let (spec, limits) = (options.spec, options.limits);
        let sandbox = crate::compile::sandbox()?;
        let bytes = spec.load_bytes(&limits).map_err(Failure::usage)?;
        let compiled = Arc::new(
            CompiledCallback::with_limits(&sandbox, &spec.name(), &bytes, &limits)
                .map_err(Failure::usage)?,
        );
        compiled
            .check_grants(&sandbox, &spec.name(), options.inert_wasi)
            .map_err(Failure::usage)?;
        let report = inspect::report(&sandbox, compiled.component());
        let instance = CallbackInstance::start(&sandbox, compiled, &spec.params, &limits)
            .map_err(Failure::usage)?;
        let subs = instance.subscriptions();
        let events: Vec<&str> = subs.kinds().into_iter().map(kind_name).collect();
        if self.json {
            let value = json!({
                "component": spec.source,
                "bytes": bytes.len(),
                "valid": true,
                "exports": report.exports,
                "imports": report.imports,
                "subscriptions": {"events": events, "batch_every": subs.batch_every()},
                "limits": limits,
                "on_fault": options.on_fault,
                "max_restarts": options.max_restarts,
                "inert_wasi": options.inert_wasi,
                "wasm_stack_bytes": WASM_STACK_BYTES,
            });
            println!("{value}");
            return Ok(0);
        }
        // A core module carrying the callback world was made a component when it was loaded.
        let from_module = bytes.get(4..8) == Some(&[1, 0, 0, 0]);
        println!(
            "{}: valid callback component ({} bytes{})",
            spec.source,
            bytes.len(),
            if from_module {
                "; a core module carrying the callback world, made a component on load"
            } else {
                ""
            }
        );
        println!("exports:");
        for (name, funcs) in &report.exports {
            println!("  {name}: {}", funcs.join(", "));
        }
        println!("imports:");
        for (name, verdict) in &report.imports {
            let what = match verdict {
                ImportVerdict::Contract => "contract",
                ImportVerdict::Granted => {
                    "granted (deterministic: frozen clock, seeded randomness, captured output)"
                }
                ImportVerdict::Inert => "inert (granted by inert_wasi: no directories, no network)",
                ImportVerdict::Refused => "refused",
            };
            println!("  {name}: {what}");
        }
        println!(
            "subscriptions: {} (per-batch events every {} step(s))",
            events.join(", "),
            subs.batch_every()
        );
        println!(
            "limits: {} ms per call, {} ms for init, {} fuel per call, {} MiB memory, {} KiB wasm stack, \
             {} KiB output per call, {} KiB per run, {} decisions per call, {} KiB state",
            limits.call_timeout.as_millis(),
            limits.init_timeout.as_millis(),
            limits.fuel_per_call,
            limits.memory_bytes >> 20,
            WASM_STACK_BYTES >> 10,
            limits.log_bytes_per_call >> 10,
            limits.log_bytes_per_run >> 10,
            limits.max_decisions_per_call,
            limits.max_state_bytes >> 10
        );
        println!(
            "compile limits: {} s CPU time, {} MiB memory (for a component neither bundled nor cached)",
            limits.compile_cpu_time.as_secs_f64(),
            limits.compile_memory_bytes >> 20
        );
        println!(
            "run budgets: {} fuel, {}% of the run's time once its calls took {} s, {} decisions, \
             {} checkpoint tags, {} saves per epoch, {} MiB of checkpoints, {} metric names, {} \
             validate-now and {} restore-checkpoint per epoch",
            limits.fuel_per_run,
            limits.time_share * 100.0,
            limits.time_grace.as_secs_f64(),
            limits.decisions_per_run,
            limits.checkpoint_tags,
            limits.checkpoint_saves_per_epoch,
            limits.checkpoint_bytes_per_run >> 20,
            limits.metric_names,
            limits.validations_per_epoch,
            limits.restores_per_epoch
        );
        println!(
            "on fault: {} (at most {} restarts)",
            options.on_fault, options.max_restarts
        );
        Ok(0)
    }
}

/// `trainrt callbacks ...`
#[derive(Subcommand)]
pub enum CallbacksCommand {
    /// List the bundled callbacks.
    List,
    /// Write the bundled callbacks to DIR as `<name>.wasm`, to inspect or pass by path.
    Export {
        /// Directory to write into (created if missing).
        dir: PathBuf,
    },
}

impl CallbacksCommand {
    /// Runs the subcommand.
    pub fn execute(self) -> Result<u8, Failure> {
        match self {
            CallbacksCommand::List => {
                for name in bundled::names() {
                    let size = bundled::component(name).map(<[u8]>::len).unwrap_or(0);
                    println!("{name:<22} {size:>8} bytes");
                }
            }
            CallbacksCommand::Export { dir } => {
                for path in bundled::export_all(&dir).map_err(Failure::failed)? {
                    println!("{}", path.display());
                }
            }
        }
        Ok(0)
    }
}
