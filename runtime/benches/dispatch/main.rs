//! Callback dispatch, end-to-end training cost and checkpoint writes. Prints markdown tables of
//! medians.
//!
//!     cargo bench -p trainrt --bench dispatch
//!
//! Three tables: callback dispatch (this file), whole training runs with and without callbacks
//! (`end_to_end.rs`) and checkpoint writes (`checkpoint_writes.rs`).
//!
//! Each figure is the median of several timed batches of calls, measured in one process so
//! ratios between rows are meaningful on a noisy machine.

mod checkpoint_writes;
#[path = "../../../tests/all/common.rs"]
mod common;
mod end_to_end;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use common::{WatGuest, kind, run_info};
use trainrt::Sandbox;
use trainrt::callback::CallbackOptions;
use trainrt::contract::{BatchInfo, BatchMetrics, Decision, EpochMetrics};
use trainrt::events::Event;
use trainrt::host::CallbackHost;

const ROUNDS: usize = 15;

/// Median nanoseconds per call of `f`, over ROUNDS rounds of `n` calls.
fn median_ns(n: u32, mut f: impl FnMut(u32)) -> f64 {
    for i in 0..n.min(1000) {
        f(i); // warm up
    }
    let mut samples: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            for i in 0..n {
                f(i);
            }
            t.elapsed().as_nanos() as f64 / f64::from(n)
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[ROUNDS / 2]
}

/// Median nanoseconds of one call of export `func` (inside `interface`, if given) of a
/// component, with `params`, made straight through wasmtime's typed API on `engine` (fuel and
/// epoch checks on, a `log` import that drops its line): no trainrt code on the path.
fn component_floor<P, R>(
    engine: &wasmtime::Engine,
    bytes: &[u8],
    interface: Option<&str>,
    func: &str,
    params: impl Fn() -> P,
) -> f64
where
    P: wasmtime::component::ComponentNamedList + wasmtime::component::Lower + Send + Sync,
    R: wasmtime::component::ComponentNamedList + wasmtime::component::Lift + Send + Sync,
{
    use wasmtime::component::{Component, Linker};
    let component = Component::new(engine, bytes).expect("component");
    let mut linker = Linker::<()>::new(engine);
    linker
        .instance(trainrt::contract::HOST_INTERFACE)
        .and_then(|mut host| {
            host.func_wrap(
                "log",
                |_, _: (trainrt::contract::Level, String)| -> wasmtime::Result<()> { Ok(()) },
            )
        })
        .expect("log import");
    let mut store = wasmtime::Store::new(engine, ());
    store.set_fuel(u64::MAX / 2).expect("fuel");
    store.set_epoch_deadline(u64::MAX / 2);
    let instance = linker
        .instantiate(&mut store, &component)
        .expect("instantiate");
    let parent = interface.map(|name| {
        instance
            .get_export_index(&mut store, None, name)
            .expect("interface export")
    });
    let index = instance
        .get_export_index(&mut store, parent.as_ref(), func)
        .expect("function export");
    let f = instance
        .get_typed_func::<P, R>(&mut store, index)
        .expect("typed export");
    median_ns(200_000, |_| {
        black_box(f.call(&mut store, params()).expect("call"));
    })
}

fn batch_end(step: u64) -> Event {
    Event::BatchEnd(BatchMetrics {
        epoch: 0,
        batch: 0,
        step,
        loss: 0.5,
        accuracy: 0.9,
        lr: 0.05,
        grad_norm: 1.0,
    })
}

fn host(sandbox: &Arc<Sandbox>, specs: &[String], metrics: usize) -> CallbackHost {
    let options: Vec<CallbackOptions> = specs
        .iter()
        .map(|s| {
            let mut options = CallbackOptions::new(s.parse().expect("spec"));
            // Tens of thousands of calls back to back, with no training between them: the
            // per-run log budget would run out part way and turn the rest into cheap drops, and
            // the callbacks would be all of the "run's" time; the bench measures the steady
            // state of the per-call path (the run-budget checks on it included).
            options.limits.log_bytes_per_run = usize::MAX;
            options.limits.time_share = f64::INFINITY;
            options.limits.fuel_per_run = u64::MAX;
            options.limits.decisions_per_run = u64::MAX;
            options
        })
        .collect();
    let mut host = CallbackHost::start(sandbox.clone(), &options).expect("callbacks start");
    host.dispatch(&Event::TrainStart(run_info(metrics)));
    host
}

fn dispatch_table(sandbox: &Arc<Sandbox>, dir: &std::path::Path) {
    let noop = WatGuest::new(&[kind::BATCH_END, kind::EPOCH_END]).write(dir, "noop");
    let epoch_only = WatGuest::new(&[kind::EPOCH_END]).write(dir, "noop-epoch-only");
    let noop = noop.to_string_lossy().into_owned();
    let epoch_only = epoch_only.to_string_lossy().into_owned();

    println!("| per event | 4 metrics (ns) | 16 metrics (ns) |");
    println!("|---|---|---|");
    // `TRAINRT_BENCH_ROW=<text>` keeps only the rows whose label contains it (for a profiler).
    let row_filter = std::env::var("TRAINRT_BENCH_ROW").unwrap_or_default();
    let wanted = |label: &str| label.contains(row_filter.as_str());
    // `TRAINRT_BENCH_METRICS=4` (or 16) measures only that column of the per-metric rows, so
    // that a profile of a row holds one metric count; the other column reads "-".
    let metric_filter = std::env::var("TRAINRT_BENCH_METRICS").ok();
    let measured = |metrics: usize| {
        metric_filter
            .as_deref()
            .is_none_or(|only| only == metrics.to_string())
    };
    // The floor: a native Rust closure receiving the same event.
    let label = "native closure, batch-end";
    if wanted(label) {
        type NativeCallback = Box<dyn FnMut(&Event) -> Vec<Decision>>;
        let mut native: NativeCallback = Box::new(|e| match e {
            Event::BatchEnd(m) if m.loss.is_nan() => vec![Decision::StopTraining("nan".into())],
            _ => Vec::new(),
        });
        let ns = median_ns(200_000, |i| {
            black_box(native(black_box(&batch_end(u64::from(i)))));
        });
        println!("| {label} | {ns:.0} | {ns:.0} |");
    }
    // wasmtime's own floor: one call into a no-op core wasm function, on the sandbox's engine
    // (fuel and epoch checks on). A component call adds wasmtime's component-model entry (export
    // and ABI lookups, resource-scope checks, post-return bookkeeping) and the canonical ABI's
    // lowering and lifting: the next three rows measure that without any trainrt code.
    let engine = sandbox.engine();
    let label = "wasmtime floor: one no-op core wasm call";
    if wanted(label) {
        let wasm = wat::parse_str(r#"(module (func (export "f")))"#).expect("wat");
        let module = wasmtime::Module::new(engine, wasm).expect("module");
        let mut store = wasmtime::Store::new(engine, ());
        store.set_fuel(u64::MAX / 2).expect("fuel");
        store.set_epoch_deadline(u64::MAX / 2);
        let f = wasmtime::Instance::new(&mut store, &module, &[])
            .and_then(|i| i.get_typed_func::<(), ()>(&mut store, "f"))
            .expect("instance");
        let ns = median_ns(200_000, |_| f.call(&mut store, ()).expect("call"));
        println!("| {label} | {ns:.0} | {ns:.0} |");
    }
    // The component model's floor: the smallest component export, `f: func()`.
    let label = "wasmtime floor: one no-op component call, `f: func()`";
    if wanted(label) {
        let ns = component_floor::<(), ()>(
            engine,
            &wat::parse_str(
                r#"(component
                     (core module $m (func (export "f")))
                     (core instance $i (instantiate $m))
                     (func (export "f") (canon lift (core func $i "f"))))"#,
            )
            .expect("wat"),
            None,
            "f",
            || (),
        );
        println!("| {label} | {ns:.0} | {ns:.0} |");
    }
    // The same no-op guest as the row below, its `on-batch-end` called straight through
    // wasmtime's typed API: what the contract's signature costs before trainrt does anything.
    let bytes = std::fs::read(&noop).expect("noop component");
    let label = "wasmtime floor: the no-op guest's `on-batch-end`, called directly";
    if wanted(label) {
        let ns = component_floor::<_, (Vec<Decision>,)>(
            engine,
            &bytes,
            Some(trainrt::contract::EXPORT_INTERFACE),
            "on-batch-end",
            || match batch_end(0) {
                Event::BatchEnd(m) => (m,),
                _ => unreachable!(),
            },
        );
        println!("| {label} | {ns:.0} | {ns:.0} |");
    }
    // Its `on-epoch-end`: the metric list makes wasmtime call the guest's allocator first.
    let label = "wasmtime floor: the no-op guest's `on-epoch-end`, called directly";
    if wanted(label) {
        let cells: Vec<String> = [4usize, 16]
            .iter()
            .map(|&metrics| {
                if !measured(metrics) {
                    return "-".to_string();
                }
                let ns = component_floor::<_, (Vec<Decision>,)>(
                    engine,
                    &bytes,
                    Some(trainrt::contract::EXPORT_INTERFACE),
                    "on-epoch-end",
                    || {
                        (EpochMetrics {
                            epoch: 0,
                            step: 0,
                            values: (0..metrics).map(|i| i as f64 * 0.1).collect(),
                        },)
                    },
                );
                format!("{ns:.0}")
            })
            .collect();
        println!("| {label} | {} | {} |", cells[0], cells[1]);
    }
    #[derive(Clone, Copy)]
    enum On {
        BatchStart,
        BatchEnd,
        EpochEnd,
    }
    let rows: [(&str, Vec<String>, On); 7] = [
        (
            "no-op component, batch-end",
            vec![noop.clone()],
            On::BatchEnd,
        ),
        (
            "unsubscribed batch-end (no guest call)",
            vec![epoch_only.clone()],
            On::BatchEnd,
        ),
        (
            // Subscribed to `fault` only: the host checks each loss and tells it on a NaN.
            "terminate-on-nan, batch-end",
            vec!["terminate-on-nan".into()],
            On::BatchEnd,
        ),
        (
            "logger, epoch-end (formats and logs a line)",
            vec!["logger".into()],
            On::EpochEnd,
        ),
        (
            "lr-schedule per step, batch-start",
            vec!["lr-schedule:per=step,schedule=constant".into()],
            On::BatchStart,
        ),
        (
            "no-op component, epoch-end",
            vec![noop.clone()],
            On::EpochEnd,
        ),
        (
            "early-stopping, epoch-end",
            vec!["early-stopping:patience=1000000,monitor=val_loss".into()],
            On::EpochEnd,
        ),
    ];
    for (label, specs, on) in rows {
        if !wanted(label) {
            continue;
        }
        let mut cells = Vec::new();
        for metrics in [4usize, 16] {
            if !measured(metrics) {
                cells.push("-".to_string());
                continue;
            }
            let mut h = host(sandbox, &specs, metrics);
            let values: Vec<f64> = (0..metrics).map(|i| i as f64 * 0.1).collect();
            let ns = match on {
                On::BatchEnd => median_ns(50_000, |i| {
                    black_box(h.dispatch(&batch_end(u64::from(i))));
                }),
                On::BatchStart => median_ns(50_000, |i| {
                    let e = Event::BatchStart(BatchInfo {
                        epoch: 0,
                        batch: 0,
                        step: u64::from(i),
                    });
                    black_box(h.dispatch(&e));
                }),
                On::EpochEnd => median_ns(20_000, |i| {
                    let e = Event::EpochEnd(EpochMetrics {
                        epoch: i,
                        step: u64::from(i),
                        values: values.clone(),
                    });
                    black_box(h.dispatch(&e));
                    // As the trainer does after each event (to write log.jsonl).
                    h.drain_logs().for_each(|line| drop(black_box(line)));
                }),
            };
            cells.push(format!("{ns:.0}"));
        }
        println!("| {label} | {} | {} |", cells[0], cells[1]);
    }
}

/// The median of `v` (the upper one of an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if std::env::var("RAYON_NUM_THREADS").is_err() {
        eprintln!(
            "note: RAYON_NUM_THREADS is unset; candle is much slower so (the CLI sets it itself)"
        );
    }
    let sandbox = Arc::new(Sandbox::new().expect("sandbox"));
    let dir = tempfile::tempdir().expect("tempdir");
    // `TRAINRT_BENCH_ONLY=dispatch`, `=end-to-end` or `=checkpoint-writes` runs one table (e.g.
    // under a profiler);
    // `=instructions-<loop>` runs one training loop for callgrind (see `instruction_count_run`).
    let only = std::env::var("TRAINRT_BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "dispatch" {
        println!("## Dispatch\n");
        dispatch_table(&sandbox, dir.path());
    }
    if only.is_empty() || only == "end-to-end" {
        println!("\n## End to end\n");
        end_to_end::table(&sandbox, dir.path());
    }
    if only.is_empty() || only == "checkpoint-writes" {
        println!("\n## Checkpoint writes\n");
        checkpoint_writes::table(dir.path());
    }
    if let Some(which) = only.strip_prefix("instructions-") {
        end_to_end::instruction_count_run(&sandbox, dir.path(), which);
    }
}
