//! Whole training runs: epoch time with and without callbacks, and the trainer against a training
//! loop written directly against candle.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use trainrt::trainer::{Observer, Quiet, RunRequest};
use trainrt::{Sandbox, TrainConfig};

use crate::common::{WatGuest, kind};
use crate::median;

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
pub(crate) fn instruction_count_run(sandbox: &Arc<Sandbox>, dir: &std::path::Path, which: &str) {
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
pub(crate) fn table(sandbox: &Arc<Sandbox>, dir: &std::path::Path) {
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
