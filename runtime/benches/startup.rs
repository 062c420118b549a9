//! Start-up, memory and containment costs. Prints markdown tables of medians.
//!
//!     cargo bench -p trainrt --bench startup
//!
//! - Start-up: compiling each bundled callback, loading the artifact precompiled into the binary,
//!   loading it from the compiled-component cache, instantiating it, and the total for the six
//!   bundled callbacks each way.
//! - Memory: resident memory added per loaded callback instance, and with 100 loaded.
//! - Hostile guests: extra wall time a run pays for one hostile guest under the default limits
//!   (restart three times, then disable).

#[path = "../../tests/all/common.rs"]
mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use common::{WatGuest, kind, quick_config, run_info};
use trainrt::callback::CallbackOptions;
use trainrt::callback::{CallbackInstance, CompiledCallback};
use trainrt::host::CallbackHost;
use trainrt::sandbox::ComponentCache;
use trainrt::trainer::{Quiet, RunRequest};
use trainrt::{Limits, Sandbox, bundled};

/// Median milliseconds of `rounds` runs of `f`.
fn median_ms(rounds: usize, mut f: impl FnMut()) -> f64 {
    let mut samples: Vec<f64> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[rounds / 2]
}

fn bytes(name: &str) -> &'static [u8] {
    bundled::component(name).expect("bundled")
}

fn startup_table(cache_dir: &Path) {
    // Compiling from the component's bytes: what a user's own callback pays once per machine.
    let uncached = Sandbox::with_cache(ComponentCache::at(None).with_builtin(false)).expect("sb");
    // What a run pays on a machine with an empty cache: the artifacts precompiled into the binary.
    let builtin = Sandbox::with_cache(ComponentCache::at(None)).expect("sandbox");
    // The compiled-component cache, as any component other than a bundled one uses it.
    let cached =
        Sandbox::with_cache(ComponentCache::at(Some(cache_dir.to_path_buf())).with_builtin(false))
            .expect("sandbox");
    println!(
        "| callback | size (KiB) | compile (ms) | precompiled, in the binary (ms) | cached load (ms) | instantiate + init (ms) |"
    );
    println!("|---|---|---|---|---|---|");
    for name in bundled::names() {
        let b = bytes(name);
        let compile = median_ms(3, || {
            CompiledCallback::new(&uncached, name, b).expect("compiles");
        });
        let precompiled = median_ms(11, || {
            CompiledCallback::new(&builtin, name, b).expect("loads");
        });
        CompiledCallback::new(&cached, name, b).expect("stores");
        let load = median_ms(11, || {
            CompiledCallback::new(&cached, name, b).expect("loads");
        });
        let compiled = Arc::new(CompiledCallback::new(&cached, name, b).expect("loads"));
        let instantiate = median_ms(51, || {
            CallbackInstance::start(&cached, compiled.clone(), &[], &Limits::default())
                .expect("starts");
        });
        println!(
            "| {name} | {} | {compile:.1} | {precompiled:.2} | {load:.2} | {instantiate:.3} |",
            b.len() / 1024
        );
    }
    let six: Vec<CallbackOptions> = bundled::names()
        .map(|s| CallbackOptions::new(s.parse().expect("spec")))
        .collect();
    let total = |sandbox: Sandbox, rounds: usize| {
        let sandbox = Arc::new(sandbox);
        median_ms(rounds, || {
            CallbackHost::start(sandbox.clone(), &six).expect("start");
        })
    };
    let cold = total(uncached, 3);
    let first = total(builtin, 11);
    let warm = total(cached, 11);
    println!(
        "| **all six, `CallbackHost::start`** (+ instantiate + init) | | **{cold:.1}** | **{first:.2}** | **{warm:.2}** | |"
    );
}

/// Compiles each bundled callback from its bytes once, with no cache and no precompiled
/// artifact: a steady figure for callgrind, whose instruction counts do not depend on the
/// machine's load. Count the whole process: Cranelift compiles on rayon's threads, outside any
/// function of this one's that `--toggle-collect` could name.
fn compile_each() {
    let uncached = Sandbox::with_cache(ComponentCache::at(None).with_builtin(false)).expect("sb");
    for name in bundled::names() {
        let started = Instant::now();
        CompiledCallback::new(&uncached, name, bytes(name)).expect("compiles");
        println!(
            "{name}: compiled in {:.1} ms",
            started.elapsed().as_secs_f64() * 1e3
        );
    }
}

/// Resident set size of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn memory_table(cache_dir: &Path) {
    let sandbox =
        Sandbox::with_cache(ComponentCache::at(Some(cache_dir.to_path_buf()))).expect("sandbox");
    println!("| callback | RSS per extra instance (KiB) | RSS with 100 loaded (MiB) |");
    println!("|---|---|---|");
    for name in ["logger", "early-stopping", "terminate-on-nan"] {
        let compiled = Arc::new(CompiledCallback::new(&sandbox, name, bytes(name)).expect("c"));
        // One first, so the compiled code and the engine's lazily built parts are resident.
        let first = CallbackInstance::start(&sandbox, compiled.clone(), &[], &Limits::default())
            .expect("starts");
        let before = rss();
        let many: Vec<CallbackInstance> = (0..100)
            .map(|_| {
                CallbackInstance::start(&sandbox, compiled.clone(), &[], &Limits::default())
                    .expect("starts")
            })
            .collect();
        let after = rss();
        println!(
            "| {name} | {:.0} | {:.1} |",
            (after.saturating_sub(before)) as f64 / 100.0 / 1024.0,
            after as f64 / (1 << 20) as f64
        );
        drop(many);
        drop(first);
    }
}

fn hostile_table(dir: &Path) {
    let sandbox = Arc::new(
        Sandbox::with_cache(ComponentCache::at(Some(dir.join("cache")))).expect("sandbox"),
    );
    let run = |name: &str, guest: Option<&WatGuest>| -> (f64, Vec<String>) {
        // Five epochs: the guest faults once, is restarted three times, then disabled.
        let mut config = quick_config(5);
        if let Some(g) = guest {
            let path = g.write(dir, name);
            config
                .push_callback(path.to_str().expect("utf-8"))
                .expect("callback spec");
            // Compile (and cache) outside the timing: compilation is start-up, measured above.
            CompiledCallback::new(&sandbox, name, &std::fs::read(&path).expect("read"))
                .expect("compiles");
        }
        let mut ms = Vec::new();
        let mut kinds = Vec::new();
        for round in 0..5 {
            let run_dir = dir.join(format!("{name}-{round}"));
            let t = Instant::now();
            let summary = trainrt::train(
                sandbox.clone(),
                RunRequest {
                    config: config.clone(),
                    run_dir,
                    resume: false,
                },
                &mut Quiet,
            )
            .expect("trains");
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            kinds = summary
                .callbacks
                .iter()
                .flat_map(|c| c.faults.iter().map(|(k, n)| format!("{n}x {k}")))
                .collect();
        }
        ms.sort_by(f64::total_cmp);
        (ms[ms.len() / 2], kinds)
    };
    let hostile = |body: &str| WatGuest::new(&[kind::EPOCH_END]).body("on-epoch-end", body);
    let (base, _) = run("baseline", None);
    println!("| hostile guest (on every epoch-end) | faults | extra run time (ms) |");
    println!("|---|---|---|");
    let guests = [
        ("infinite loop", hostile("(loop $l (br $l))")),
        (
            "memory grow in small steps",
            hostile("(loop $l (drop (memory.grow (i32.const 1))) (br $l))"),
        ),
        (
            "infinite recursion",
            hostile("(call $recurse)").extra("(func $recurse (call $recurse))"),
        ),
        ("unreachable", hostile("unreachable")),
    ];
    for (label, guest) in guests {
        let (ms, kinds) = run(&label.replace(' ', "-"), Some(&guest));
        println!("| {label} | {} | {:+.0} |", kinds.join(", "), ms - base);
    }
    println!("\nBaseline: a 5-epoch digits run without the guest takes {base:.0} ms.");
}

/// The four-language examples, when `examples/run-all.sh` has built them: first compile, cached
/// load, and the cost of one `epoch-end` event.
fn languages_table(dir: &Path) {
    use trainrt::contract::EpochMetrics;
    use trainrt::events::Event;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/callbacks");
    let langs: Vec<(&str, std::path::PathBuf)> = ["rust", "python", "js", "c"]
        .into_iter()
        .map(|l| (l, root.join(l).join("build/early-stop.wasm")))
        .filter(|(_, p)| p.is_file())
        .collect();
    if langs.is_empty() {
        println!("(not built: run examples/run-all.sh first)");
        return;
    }
    let uncached = Sandbox::with_cache(ComponentCache::at(None)).expect("sandbox");
    let cached = Arc::new(
        Sandbox::with_cache(ComponentCache::at(Some(dir.join("lang-cache")))).expect("sandbox"),
    );
    println!(
        "| language | size (KiB) | first compile (ms) | cached load (ms) | epoch-end event (µs) |"
    );
    println!("|---|---|---|---|---|");
    for (lang, path) in langs {
        let b = std::fs::read(&path).expect("read");
        let compile = median_ms(1, || {
            CompiledCallback::new(&uncached, lang, &b).expect("compiles");
        });
        CompiledCallback::new(&cached, lang, &b).expect("stores");
        let load = median_ms(5, || {
            CompiledCallback::new(&cached, lang, &b).expect("loads");
        });
        let mut options = CallbackOptions::new(
            format!("{}:patience=1000000", path.display())
                .parse()
                .expect("spec"),
        );
        options.inert_wasi = true;
        let mut host = CallbackHost::start(cached.clone(), &[options]).expect("starts");
        host.dispatch(&Event::TrainStart(run_info(4)));
        let mut epoch = 0u32;
        let mut event = || {
            epoch += 1;
            let values = vec![0.5, 0.9, 1.0 / f64::from(epoch), 0.9];
            host.dispatch(&Event::EpochEnd(EpochMetrics {
                epoch,
                step: u64::from(epoch),
                values,
            }));
        };
        for _ in 0..50 {
            event();
        }
        let per_event = median_ms(11, || {
            for _ in 0..200 {
                event();
            }
        }) / 200.0
            * 1e3;
        println!(
            "| {lang} | {} | {compile:.0} | {load:.1} | {per_event:.1} |",
            b.len() / 1024
        );
    }
}

fn main() {
    if std::env::var("RAYON_NUM_THREADS").is_err() {
        eprintln!("note: RAYON_NUM_THREADS is unset; candle is much slower so");
    }
    // TRAINRT_BENCH_ONLY=start-up|memory|hostile|languages runs one table; =compile only
    // compiles the bundled callbacks once each (for callgrind).
    let only = std::env::var("TRAINRT_BENCH_ONLY").ok();
    let wanted = |table: &str| only.as_deref().is_none_or(|o| o == table);
    let dir = tempfile::tempdir().expect("tempdir");
    if wanted("start-up") {
        println!("## Start-up\n");
        startup_table(&dir.path().join("cache"));
    }
    if only.as_deref() == Some("compile") {
        compile_each();
    }
    if wanted("memory") {
        println!("\n## Memory\n");
        memory_table(&dir.path().join("cache"));
    }
    if wanted("hostile") {
        println!("\n## Hostile guests\n");
        hostile_table(dir.path());
    }
    if wanted("languages") {
        println!("\n## Callbacks in other languages\n");
        languages_table(dir.path());
    }
}
