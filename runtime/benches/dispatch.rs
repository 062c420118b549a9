//! Callback dispatch, end-to-end training cost and checkpoint writes. Prints markdown tables of
//! medians.
//!
//!     cargo bench -p trainrt --bench dispatch
//!
//! Each figure is the median of several timed batches of calls, measured in one process so
//! ratios between rows are meaningful on a noisy machine.

#[path = "../../tests/all/common.rs"]
mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{WatGuest, kind, run_info};
use trainrt::callback::CallbackOptions;
use trainrt::contract::{BatchInfo, BatchMetrics, Decision, EpochMetrics};
use trainrt::events::Event;
use trainrt::host::CallbackHost;
use trainrt::trainer::{Observer, Quiet, RunRequest};
use trainrt::{Sandbox, TrainConfig};

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
            // Tens of thousands of calls: the per-run log budget would run out part way and
            // turn the rest into cheap drops; the bench measures the steady state.
            options.limits.log_bytes_per_run = usize::MAX;
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

struct EpochTimer {
    start: Instant,
    start_cpu: Duration,
    epochs: Vec<Duration>,
    /// CPU time of the whole process (all threads) over the same span as `epochs`.
    epochs_cpu: Vec<Duration>,
    /// From the end of the first batch to the end of the last: training steps only.
    training: Vec<Duration>,
}

impl EpochTimer {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            start_cpu: Duration::ZERO,
            epochs: Vec::new(),
            epochs_cpu: Vec::new(),
            training: Vec::new(),
        }
    }
}

/// CPU time used so far by every live thread of this process, from the scheduler's own
/// accounting (`/proc/self/task/*/schedstat`, nanoseconds). On this VM the kernel leaves time
/// stolen by the hypervisor out of it, so it shakes far less than wall-clock time when
/// neighbours are busy.
fn process_cpu() -> Duration {
    let mut ns = 0u64;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            if let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) {
                ns += stat
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    Duration::from_nanos(ns)
}

impl Observer for EpochTimer {
    fn batch_done(&mut self, _epoch: u32, batch: u32, batches: u32) {
        if batch == 0 {
            self.start_cpu = process_cpu();
            self.start = Instant::now();
        }
        if batch + 1 == batches {
            self.training.push(self.start.elapsed());
        }
    }
    fn epoch_done(&mut self, _epoch: u32, _metrics: &serde_json::Value) {
        self.epochs.push(self.start.elapsed());
        self.epochs_cpu
            .push(process_cpu().saturating_sub(self.start_cpu));
    }
}

/// Median epoch time (ms) of a training loop written directly against candle, no framework: the
/// same model, data split, batch order, batch size and plain SGD (no momentum) as trainrt's
/// `--optimizer sgd` run, with the loss read back every batch as any loop that logs it does.
fn handwritten_candle_epoch_ms(data: &str, hidden: &[usize], epochs: u32) -> f64 {
    use candle_core::{DType, Device, Tensor};
    use candle_nn::{Optimizer, VarBuilder, VarMap};
    let device = Device::Cpu;
    let spec: trainrt::data::DataSpec = data.parse().expect("data");
    let dataset = spec.load().expect("loads");
    let (train, _val) = trainrt::data::split(&dataset, 0.2, 42).expect("split");
    let features = train.num_features();
    let x = Tensor::from_slice(train.features(), (train.len(), features), &device).expect("x");
    let y = Tensor::from_slice(train.labels(), train.len(), &device).expect("y");
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let mut sizes = vec![features];
    sizes.extend_from_slice(hidden);
    sizes.push(train.num_classes());
    let layers: Vec<candle_nn::Linear> = sizes
        .windows(2)
        .enumerate()
        .map(|(i, w)| candle_nn::linear(w[0], w[1], vb.pp(format!("l{i}"))).expect("linear"))
        .collect();
    let mut sgd = candle_nn::SGD::new(varmap.all_vars(), 0.05).expect("sgd");
    let mut ms = Vec::new();
    for epoch in 0..epochs {
        let order = trainrt::data::epoch_permutation(train.len(), 42, u64::from(epoch));
        let took = handwritten_epoch(&x, &y, &layers, &mut sgd, &order);
        // Epoch 0 is left out when there are others, as for the trainer's runs.
        if epoch > 0 || epochs == 1 {
            ms.push(took.as_secs_f64() * 1e3);
        }
    }
    median(ms)
}

/// One epoch of the hand-written loop; returns the time from the end of its first batch (timed
/// like the trainer's epochs). Not inlined, so `callgrind --toggle-collect` can count it alone.
#[inline(never)]
fn handwritten_epoch(
    x: &candle_core::Tensor,
    y: &candle_core::Tensor,
    layers: &[candle_nn::Linear],
    sgd: &mut candle_nn::SGD,
    order: &[usize],
) -> Duration {
    use candle_core::Tensor;
    use candle_nn::{Module, Optimizer};
    let mut t = Instant::now();
    for (b, chunk) in order.chunks(32).enumerate() {
        let idx: Vec<u32> = chunk.iter().map(|&i| i as u32).collect();
        let idx = Tensor::from_vec(idx, chunk.len(), x.device()).expect("idx");
        let xb = x.index_select(&idx, 0).expect("xb");
        let yb = y.index_select(&idx, 0).expect("yb");
        let mut h = xb;
        for (i, layer) in layers.iter().enumerate() {
            h = layer.forward(&h).expect("forward");
            if i + 1 < layers.len() {
                h = h.relu().expect("relu");
            }
        }
        let loss = candle_nn::loss::cross_entropy(&h, &yb).expect("loss");
        sgd.backward_step(&loss).expect("step");
        black_box(loss.to_scalar::<f32>().expect("scalar"));
        if b == 0 {
            t = Instant::now();
        }
    }
    t.elapsed()
}

/// Runs only the trainer (plain SGD, no callbacks) or only the hand-written loop on digits, for
/// counting instructions under callgrind (see BENCHMARKS.md).
fn instruction_count_run(sandbox: &Arc<Sandbox>, dir: &std::path::Path, which: &str) {
    let epochs = std::env::var("TRAINRT_BENCH_EPOCHS")
        .ok()
        .and_then(|e| e.parse().ok())
        .unwrap_or(3);
    let mut config = TrainConfig {
        epochs,
        optimizer: "sgd".parse().expect("optimizer spec"),
        ..TrainConfig::default()
    };
    // `TRAINRT_BENCH_DATA` / `TRAINRT_BENCH_MODEL` count another task than digits (whole-epoch
    // counts only; the hand-written loop is digits' MLP).
    if let Ok(data) = std::env::var("TRAINRT_BENCH_DATA") {
        config.data = data.parse().expect("TRAINRT_BENCH_DATA: a --data spec");
    }
    if let Ok(model) = std::env::var("TRAINRT_BENCH_MODEL") {
        config.model = model.parse().expect("TRAINRT_BENCH_MODEL: a --model spec");
    }
    match which {
        "handwritten" => {
            black_box(handwritten_candle_epoch_ms("digits", &[128], epochs));
            return;
        }
        "trainrt" => {}
        // Whole epochs (training, validation, epoch-end callbacks and the checkpoints they ask
        // for) with the end-to-end table's setups and its default optimizer: count
        // `trainrt::trainer::Run::fit`.
        _ => {
            config.optimizer = TrainConfig::default().optimizer;
            let noop = WatGuest::new(&[kind::BATCH_END]).write(dir, "noop-batch");
            let callbacks = match which {
                "callbacks-none" => Vec::new(),
                "callbacks-bundled" => six_bundled(),
                "callbacks-noop" => vec![noop.to_string_lossy().into_owned(); 6],
                _ => panic!(
                    "TRAINRT_BENCH_ONLY=instructions-{which}: expected handwritten, trainrt, \
                     callbacks-none, callbacks-bundled or callbacks-noop"
                ),
            };
            for c in &callbacks {
                config.push_callback(c).expect("callback spec");
            }
        }
    }
    trainrt::train(
        sandbox.clone(),
        RunRequest {
            config,
            run_dir: dir.join("instructions"),
            resume: false,
        },
        &mut Quiet,
    )
    .expect("trains");
}

/// What one training run of the end-to-end table measured.
struct RunTimes {
    /// Median epoch time (ms): end of the first batch to the epoch's metrics.
    epoch_ms: f64,
    /// Median CPU time of all threads over the same span (ms).
    epoch_cpu_ms: f64,
    /// Median time of the training steps alone (ms): end of the first batch to the end of the last.
    training_ms: f64,
    /// Time spent inside guest calls, per epoch (ms), from the callbacks' own statistics.
    in_guests_ms: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One trainrt run; epoch 0 (first touch of the data, the caches and the guests) is left out.
fn trainrt_run(
    sandbox: &Arc<Sandbox>,
    run_dir: std::path::PathBuf,
    mut config: TrainConfig,
    callbacks: &[String],
) -> RunTimes {
    for c in callbacks {
        config.push_callback(c).expect("callback spec");
    }
    let epochs = config.epochs;
    let _ = std::fs::remove_dir_all(&run_dir);
    let mut timer = EpochTimer::new();
    let summary = trainrt::train(
        sandbox.clone(),
        RunRequest {
            config,
            run_dir,
            resume: false,
        },
        &mut timer,
    )
    .expect("trains");
    let skip_first = |v: &[Duration]| -> Vec<f64> {
        let from = usize::from(v.len() > 1);
        v[from..].iter().map(|d| d.as_secs_f64() * 1e3).collect()
    };
    let guest_ns: u64 = summary
        .callbacks
        .iter()
        .map(|c| c.stats.total_time_ns)
        .sum();
    RunTimes {
        epoch_ms: median(skip_first(&timer.epochs)),
        epoch_cpu_ms: median(skip_first(&timer.epochs_cpu)),
        training_ms: median(skip_first(&timer.training)),
        in_guests_ms: guest_ns as f64 / 1e6 / f64::from(epochs),
    }
}

/// The six bundled callbacks, configured so that none stops the run early.
fn six_bundled() -> Vec<String> {
    [
        "logger",
        "early-stopping:patience=1000",
        "model-checkpoint:save_best_only=true",
        "lr-schedule:schedule=constant",
        "reduce-lr-on-plateau:patience=1000",
        "terminate-on-nan",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Epoch time with and without callbacks, and the trainer against a hand-written candle loop.
///
/// This machine's speed drifts by tens of percent within a minute, so the setups are not run one
/// after the other: each round runs every setup once (in a rotating order), each round's ratios
/// are taken against that round's own baseline, and the table reports the median over rounds.
fn end_to_end_table(sandbox: &Arc<Sandbox>, dir: &std::path::Path) {
    let noop = WatGuest::new(&[kind::BATCH_END]).write(dir, "noop-batch");
    let six_bundled = six_bundled();
    let five_bundled: Vec<String> = six_bundled
        .iter()
        .filter(|s| !s.starts_with("model-checkpoint"))
        .cloned()
        .collect();
    let six_noop: Vec<String> = (0..6)
        .map(|_| noop.to_string_lossy().into_owned())
        .collect();
    let rounds_from_env = std::env::var("TRAINRT_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse::<usize>().ok());
    // (data, model, hidden sizes, epochs per run, rounds)
    let mut tasks = vec![("digits", "mlp", vec![128], 6u32, 11usize)];
    // The 60k x 784 task takes tens of seconds per epoch on a 2-core machine: opt in.
    if std::env::var_os("TRAINRT_BENCH_LARGE").is_some() {
        tasks.push((
            "synthetic:samples=60000,features=784,classes=10",
            "mlp:512,512",
            vec![512, 512],
            1,
            3,
        ));
    }
    for (data, model, hidden, epochs, rounds) in tasks {
        let rounds = rounds_from_env.unwrap_or(rounds);
        let short = format!("{data}, {model}");
        let config = |optimizer: &str| TrainConfig {
            data: data.parse().expect("data spec"),
            model: model.parse().expect("model spec"),
            epochs,
            optimizer: optimizer.parse().expect("optimizer spec"),
            ..TrainConfig::default()
        };
        // Setups with callbacks run the default optimizer (SGD, momentum 0.9).
        let default_optimizer = TrainConfig::default().optimizer;
        let setups: [(&str, &[String]); 4] = [
            ("none", &[]),
            ("six bundled", &six_bundled),
            // Without the `best` checkpoint each improving epoch: the callbacks' own share.
            ("five bundled (all but model-checkpoint)", &five_bundled),
            ("six no-op components, every batch", &six_noop),
        ];
        // [round][setup], plus the plain-SGD pair.
        let mut with_callbacks: Vec<Vec<RunTimes>> = Vec::new();
        let mut handwritten = Vec::new();
        let mut plain = Vec::new();
        for round in 0..rounds {
            let mut times: Vec<Option<RunTimes>> = (0..setups.len()).map(|_| None).collect();
            for k in 0..setups.len() {
                let i = (round + k) % setups.len();
                let (label, callbacks) = setups[i];
                let run_dir = dir.join("e2e").join(label.replace(' ', "-"));
                times[i] = Some(trainrt_run(
                    sandbox,
                    run_dir,
                    config(&default_optimizer.to_string()),
                    callbacks,
                ));
            }
            with_callbacks.push(times.into_iter().flatten().collect());
            // The trainer against a loop with no framework at all, both with plain SGD.
            let hand = || handwritten_candle_epoch_ms(data, &hidden, epochs);
            let ours = || {
                // The `last` checkpoint only at the end, as the hand-written loop writes none:
                // otherwise each epoch's is written (and fsync'd) in the background during the
                // next epoch's steps, which this comparison is not about.
                let plain = TrainConfig {
                    checkpoint_every: epochs + 1,
                    ..config("sgd")
                };
                trainrt_run(sandbox, dir.join("e2e").join("plain"), plain, &[]).training_ms
            };
            let (h, p) = if round % 2 == 0 {
                let h = hand();
                (h, ours())
            } else {
                let p = ours();
                (hand(), p)
            };
            handwritten.push(h);
            plain.push(p);
        }
        println!("### {short}: {rounds} rounds, {epochs} epochs per run\n");
        println!(
            "| setup | epoch, wall (ms) | vs none, wall | epoch, CPU (ms) | vs none, CPU | in guest calls per epoch (ms) |"
        );
        println!("|---|---|---|---|---|---|");
        // Median over rounds of each round's ratio to its own baseline, with the range.
        let versus = |i: usize, f: fn(&RunTimes) -> f64| -> String {
            let ratios: Vec<f64> = with_callbacks
                .iter()
                .map(|r| (f(&r[i]) / f(&r[0]) - 1.0) * 100.0)
                .collect();
            let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!("{:+.1}% ({lo:+.0}% .. {hi:+.0}%)", median(ratios))
        };
        for (i, (label, _)) in setups.iter().enumerate() {
            let wall = median(with_callbacks.iter().map(|r| r[i].epoch_ms).collect());
            let cpu = median(with_callbacks.iter().map(|r| r[i].epoch_cpu_ms).collect());
            let in_guests = median(with_callbacks.iter().map(|r| r[i].in_guests_ms).collect());
            if i == 0 {
                println!("| {label} | {wall:.2} | — | {cpu:.2} | — | — |");
            } else {
                println!(
                    "| {label} | {wall:.2} | {} | {cpu:.2} | {} | {in_guests:.3} ({:.1}% of an epoch) |",
                    versus(i, |t| t.epoch_ms),
                    versus(i, |t| t.epoch_cpu_ms),
                    in_guests / wall * 100.0
                );
            }
        }
        let ratios: Vec<f64> = handwritten
            .iter()
            .zip(&plain)
            .map(|(h, p)| (p / h - 1.0) * 100.0)
            .collect();
        println!(
            "\nTraining steps only, plain SGD: hand-written candle loop {:.2} ms, trainrt {:.2} ms; trainrt vs hand-written, median of rounds {:+.1}% (range {:+.1}% .. {:+.1}%)\n",
            median(handwritten.clone()),
            median(plain.clone()),
            median(ratios.clone()),
            ratios.iter().copied().fold(f64::INFINITY, f64::min),
            ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        );
    }
}

/// CPU time the whole machine spent since boot, in clock ticks (user, nice, system, irq and
/// softirq; not idle, I/O wait or time stolen by the hypervisor).
fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    [0, 1, 2, 5, 6].iter().filter_map(|&i| fields.get(i)).sum()
}

/// What writing an epoch's checkpoints durably costs, for a digits-sized checkpoint (the MLP
/// 64-128-10 with SGD momentum, ~77 KB): wall time, and the machine's CPU time, because an
/// fsync's journal commit runs partly in kernel threads that the process's own CPU time leaves
/// out. Each round writes every setup `n` times, in a rotating order; medians over rounds.
fn checkpoint_writes_table(dir: &std::path::Path) {
    use candle_core::{Device, Tensor};
    use trainrt::checkpoint::{self, CheckpointMeta, Encoded};

    let ckpt_dir = dir.join("checkpoint-writes");
    let shapes: [(&str, &[usize]); 4] = [
        ("fc1.weight", &[128, 64]),
        ("fc1.bias", &[128]),
        ("fc2.weight", &[10, 128]),
        ("fc2.bias", &[10]),
    ];
    let tensors = |seed: f32| -> Vec<(String, Tensor)> {
        shapes
            .iter()
            .map(|(name, shape)| {
                let n: usize = shape.iter().product();
                let values: Vec<f32> = (0..n).map(|i| seed + i as f32 * 1e-3).collect();
                let t = Tensor::from_vec(values, *shape, &Device::Cpu).expect("tensor");
                (name.to_string(), t)
            })
            .collect()
    };
    let encoded = |tag: &str, seed: f32| -> Encoded {
        let meta = CheckpointMeta {
            format_version: checkpoint::FORMAT_VERSION,
            epoch: 3,
            step: 135,
            lr: 0.01,
            model: "mlp 64-128-10".into(),
            optimizer: "sgd:momentum=0.9".into(),
            seed: 42,
            callback_states: Vec::new(),
            extra: serde_json::Value::Null,
        };
        checkpoint::encode(&ckpt_dir, tag, &meta, &tensors(seed), &tensors(seed + 1.0))
            .expect("encode")
    };
    // `best` of another state than `last` (an earlier epoch's weights, say), and of the same.
    let distinct = [encoded("best", 0.5), encoded("last", 1.0)];
    let same = [encoded("best", 1.0), encoded("last", 1.0)];
    let setups: [(&str, &dyn Fn()); 4] = [
        ("`last` alone (one file, one directory sync)", &|| {
            checkpoint::write_all(&distinct[1..]).expect("write")
        }),
        (
            "`best` then `last`, one at a time (two directory syncs)",
            &|| {
                checkpoint::write_all(&distinct[..1]).expect("write");
                checkpoint::write_all(&distinct[1..]).expect("write");
            },
        ),
        (
            "`best` and `last` as one group (one directory sync)",
            &|| checkpoint::write_all(&distinct).expect("write"),
        ),
        (
            "`best` and `last` of the same state, one group (written once, linked twice)",
            &|| checkpoint::write_all(&same).expect("write"),
        ),
    ];
    let (rounds, n) = (9, 300);
    let ticks_per_s = 100.0; // USER_HZ, the unit of /proc/stat on Linux
    let mut wall = vec![Vec::new(); setups.len()];
    let mut cpu = vec![Vec::new(); setups.len()];
    for round in 0..rounds {
        for k in 0..setups.len() {
            let i = (round + k) % setups.len();
            let (ticks, started) = (machine_busy_ticks(), Instant::now());
            for _ in 0..n {
                setups[i].1();
            }
            wall[i].push(started.elapsed().as_secs_f64() * 1e3 / f64::from(n));
            let busy = machine_busy_ticks().saturating_sub(ticks) as f64;
            cpu[i].push(busy / ticks_per_s * 1e3 / f64::from(n));
        }
    }
    println!(
        "{rounds} rounds of {n} epochs' writes each, in {}\n",
        ckpt_dir.display()
    );
    println!("| per epoch | wall (ms) | machine CPU (ms) |");
    println!("|---|---|---|");
    for (i, (label, _)) in setups.iter().enumerate() {
        println!(
            "| {label} | {:.2} | {:.2} |",
            median(wall[i].clone()),
            median(cpu[i].clone())
        );
    }
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
        end_to_end_table(&sandbox, dir.path());
    }
    if only.is_empty() || only == "checkpoint-writes" {
        println!("\n## Checkpoint writes\n");
        checkpoint_writes_table(dir.path());
    }
    if let Some(which) = only.strip_prefix("instructions-") {
        instruction_count_run(&sandbox, dir.path(), which);
    }
}
