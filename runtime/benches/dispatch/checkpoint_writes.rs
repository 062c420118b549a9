//! What writing an epoch's checkpoints durably costs.

use std::time::Instant;

use crate::median;

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
pub(crate) fn table(dir: &std::path::Path) {
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
