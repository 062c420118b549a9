//! Callback dispatch and end-to-end training cost. Prints markdown tables of medians.
//!
//!     cargo bench -p trainrt --bench dispatch
//!
//! Each figure is the median of several timed batches of calls, measured in one process so
//! ratios between rows are meaningful on a noisy machine.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{WatGuest, kind, run_info};
use trainrt::contract::{BatchInfo, BatchMetrics, Decision, EpochMetrics};
use trainrt::events::Event;
use trainrt::host::{CallbackHost, CallbackOptions};
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
        .map(|s| CallbackOptions::new(s.parse().expect("spec")))
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
    // The floor: a native Rust closure receiving the same event.
    type NativeCallback = Box<dyn FnMut(&Event) -> Vec<Decision>>;
    let mut native: NativeCallback = Box::new(|e| match e {
        Event::BatchEnd(m) if m.loss.is_nan() => vec![Decision::StopTraining("nan".into())],
        _ => Vec::new(),
    });
    let ns = median_ns(200_000, |i| {
        black_box(native(black_box(&batch_end(u64::from(i)))));
    });
    println!("| native closure, batch-end | {ns:.0} | {ns:.0} |");
    // wasmtime's own floor: one call into a no-op core wasm function, on the sandbox's engine
    // (fuel and epoch checks on). A component call enters the guest twice (the export, then its
    // post-return) and lowers and lifts values through the canonical ABI on top of this.
    let engine = sandbox.engine();
    let wasm = wat::parse_str(r#"(module (func (export "f")))"#).expect("wat");
    let module = wasmtime::Module::new(engine, wasm).expect("module");
    let mut store = wasmtime::Store::new(engine, ());
    store.set_fuel(u64::MAX / 2).expect("fuel");
    store.set_epoch_deadline(u64::MAX / 2);
    let f = wasmtime::Instance::new(&mut store, &module, &[])
        .and_then(|i| i.get_typed_func::<(), ()>(&mut store, "f"))
        .expect("instance");
    let ns = median_ns(200_000, |_| f.call(&mut store, ()).expect("call"));
    println!("| wasmtime floor: one no-op core wasm call | {ns:.0} | {ns:.0} |");
    #[derive(Clone, Copy)]
    enum On {
        BatchStart,
        BatchEnd,
        EpochEnd,
    }
    let rows: [(&str, Vec<String>, On); 6] = [
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
            "terminate-on-nan, batch-end",
            vec!["terminate-on-nan".into()],
            On::BatchEnd,
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
        let mut cells = Vec::new();
        for metrics in [4usize, 16] {
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
                }),
            };
            cells.push(format!("{ns:.0}"));
        }
        println!("| {label} | {} | {} |", cells[0], cells[1]);
    }
}

struct EpochTimer {
    start: Instant,
    epochs: Vec<Duration>,
    /// From the end of the first batch to the end of the last: training steps only.
    training: Vec<Duration>,
}

impl EpochTimer {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            epochs: Vec::new(),
            training: Vec::new(),
        }
    }
}

impl Observer for EpochTimer {
    fn batch_done(&mut self, _epoch: u32, batch: u32, batches: u32) {
        if batch == 0 {
            self.start = Instant::now();
        }
        if batch + 1 == batches {
            self.training.push(self.start.elapsed());
        }
    }
    fn epoch_done(&mut self, _epoch: u32, _metrics: &serde_json::Value) {
        self.epochs.push(self.start.elapsed());
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
        ms.push(took.as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    ms[ms.len() / 2]
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
    if which == "handwritten" {
        black_box(handwritten_candle_epoch_ms("digits", &[128], epochs));
        return;
    }
    let config = TrainConfig {
        epochs,
        optimizer: "sgd".into(),
        ..TrainConfig::default()
    };
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

fn end_to_end_table(sandbox: &Arc<Sandbox>, dir: &std::path::Path) {
    let noop = WatGuest::new(&[kind::BATCH_END]).write(dir, "noop-batch");
    let six_bundled = [
        "logger",
        "early-stopping:patience=1000",
        "model-checkpoint:save_best_only=true",
        "lr-schedule:schedule=constant",
        "reduce-lr-on-plateau:patience=1000",
        "terminate-on-nan",
    ];
    println!("| data | callbacks | median epoch (ms) | vs none |");
    println!("|---|---|---|---|");
    let mut datasets = vec![("digits", 12u32)];
    // The 60k x 784 task takes tens of seconds per epoch on a 2-core machine: opt in.
    if std::env::var_os("TRAINRT_BENCH_LARGE").is_some() {
        datasets.push(("synthetic:samples=60000,features=784,classes=10", 2));
    }
    for (data, epochs) in datasets {
        let model = if data == "digits" {
            "mlp"
        } else {
            "mlp:512,512"
        };
        let mut base = f64::NAN;
        let hidden: &[usize] = if data == "digits" {
            &[128]
        } else {
            &[512, 512]
        };
        let short = if data == "digits" {
            "digits, mlp 64-128-10"
        } else {
            "synthetic 60k x 784, mlp 784-512-512-10"
        };
        // The trainer against a loop with no framework at all, both with plain SGD.
        let plain = {
            let config = TrainConfig {
                data: data.into(),
                model: model.into(),
                epochs,
                optimizer: "sgd".into(),
                ..TrainConfig::default()
            };
            let mut timer = EpochTimer::new();
            trainrt::train(
                sandbox.clone(),
                RunRequest {
                    config,
                    run_dir: dir.join(format!("{}-plain-sgd", data.len())),
                    resume: false,
                },
                &mut timer,
            )
            .expect("trains");
            let mut ms: Vec<f64> = timer
                .training
                .iter()
                .map(|d| d.as_secs_f64() * 1e3)
                .collect();
            ms.sort_by(f64::total_cmp);
            ms[ms.len() / 2]
        };
        let handwritten = handwritten_candle_epoch_ms(data, hidden, epochs.max(3));
        println!(
            "| {short} | hand-written candle loop, plain SGD (training steps only) | {handwritten:.2} | — |"
        );
        println!(
            "| {short} | trainrt, plain SGD, no callbacks (training steps only) | {plain:.2} | {:+.1}% vs hand-written |",
            (plain / handwritten - 1.0) * 100.0
        );
        let setups: [(&str, Vec<String>); 3] = [
            ("none", vec![]),
            (
                "six bundled",
                six_bundled.iter().map(|s| s.to_string()).collect(),
            ),
            (
                "six no-op, every batch",
                (0..6)
                    .map(|_| noop.to_string_lossy().into_owned())
                    .collect(),
            ),
        ];
        for (label, callbacks) in setups {
            let mut config = TrainConfig {
                data: data.into(),
                model: model.into(),
                epochs,
                ..TrainConfig::default()
            };
            for c in &callbacks {
                config.push_callback(c);
            }
            let run_dir = dir
                .join(format!("{}-{label}", data.len()))
                .join(label.replace(' ', "-"));
            let mut timer = EpochTimer::new();
            trainrt::train(
                sandbox.clone(),
                RunRequest {
                    config,
                    run_dir,
                    resume: false,
                },
                &mut timer,
            )
            .expect("trains");
            let mut ms: Vec<f64> = timer.epochs.iter().map(|d| d.as_secs_f64() * 1e3).collect();
            ms.sort_by(f64::total_cmp);
            let median = ms[ms.len() / 2];
            if label == "none" {
                base = median;
            }
            println!(
                "| {short} | {label} | {median:.2} | {:+.1}% |",
                (median / base - 1.0) * 100.0
            );
        }
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
    // `TRAINRT_BENCH_ONLY=dispatch` or `=end-to-end` runs one table (e.g. under a profiler);
    // `=instructions-trainrt` or `=instructions-handwritten` runs one training loop for callgrind.
    let only = std::env::var("TRAINRT_BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "dispatch" {
        println!("## Dispatch\n");
        dispatch_table(&sandbox, dir.path());
    }
    if only.is_empty() || only == "end-to-end" {
        println!("\n## End to end\n");
        end_to_end_table(&sandbox, dir.path());
    }
    if let Some(which) = only.strip_prefix("instructions-") {
        instruction_count_run(&sandbox, dir.path(), which);
    }
}
