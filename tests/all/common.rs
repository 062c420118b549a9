//! Shared helpers for the integration tests: fixture guests built from WAT by test code (never
//! checked-in binaries), small training configs, and run-directory readers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use trainrt::Sandbox;
use trainrt::config::TrainConfig;
use trainrt::trainer::{Quiet, RunRequest, RunSummary};

/// Where the tests cache compiled components: the build's temp dir, not the user's cache.
pub fn component_cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("component-cache")
}

/// One engine for the whole test binary, as a service would share it.
pub fn sandbox() -> Arc<Sandbox> {
    static SANDBOX: OnceLock<Arc<Sandbox>> = OnceLock::new();
    SANDBOX
        .get_or_init(|| {
            let cache = trainrt::sandbox::ComponentCache::at(Some(component_cache_dir()));
            Arc::new(Sandbox::with_cache(cache).expect("sandbox"))
        })
        .clone()
}

/// The `trainrt` binary under test, caching where the tests do.
pub fn trainrt_command() -> std::process::Command {
    // The runtime's benches share this file but have no binary to run (and never call this).
    let Some(binary) = option_env!("CARGO_BIN_EXE_trainrt") else {
        panic!("trainrt_command is for the integration tests, which build the binary");
    };
    let mut command = std::process::Command::new(binary);
    command.env("TRAINRT_CACHE_DIR", component_cache_dir());
    command
}

/// Runs `trainrt ARGS` in `cwd` to the end; `env` overrides variables (e.g. the cache dir).
pub fn run_trainrt(args: &[&str], cwd: &Path, env: &[(&str, &Path)]) -> std::process::Output {
    let mut command = trainrt_command();
    for (key, value) in env {
        command.env(key, value);
    }
    command
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("trainrt runs")
}

/// A finished command's stderr, as text.
pub fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A short digits run: small enough for a test, long enough to learn.
pub fn quick_config(epochs: u32) -> TrainConfig {
    TrainConfig {
        epochs,
        ..TrainConfig::default()
    }
}

/// Trains `config` into `dir` (a new run).
pub fn train(config: TrainConfig, dir: &Path) -> RunSummary {
    trainrt::train(
        sandbox(),
        RunRequest {
            config,
            run_dir: dir.to_path_buf(),
            resume: false,
        },
        &mut Quiet,
    )
    .expect("training runs")
}

/// The model tensors of a run's checkpoint, as raw bytes by name, for bitwise comparisons.
pub fn weights(run_dir: &Path, tag: &str) -> BTreeMap<String, Vec<u8>> {
    let ckpt = trainrt::checkpoint::load(
        &run_dir
            .join("checkpoints")
            .join(format!("{tag}.safetensors")),
    )
    .expect("checkpoint loads");
    ckpt.model
        .iter()
        .map(|(name, t)| {
            let v: Vec<f32> = t
                .flatten_all()
                .and_then(|t| t.to_vec1())
                .expect("f32 tensor");
            (
                name.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect()
}

/// Reads a JSON-lines file of the run directory.
pub fn jsonl(run_dir: &Path, file: &str) -> Vec<serde_json::Value> {
    trainrt::rundir::read_json_lines(&run_dir.join(file)).expect("readable jsonl")
}

/// Reads `summary.json`.
pub fn summary(run_dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(run_dir.join("summary.json")).expect("summary.json"))
        .expect("valid json")
}

/// The guest functions of the callback world, with their core wasm signatures (params, results).
const FUNCS: [(&str, &str); 11] = [
    ("on-train-start", "(param i32)"),
    ("on-epoch-start", "(param i32 i64 f64)"),
    ("on-batch-start", "(param i32 i32 i64)"),
    ("on-batch-end", "(param i32 i32 i64 f64 f64 f64 f64)"),
    ("on-validation-end", "(param i32 i64 f64 f64)"),
    ("on-epoch-end", "(param i32 i64 i32 i32)"),
    ("on-checkpoint-saved", "(param i32 i32 i32 i64)"),
    ("on-train-end", "(param i32 i32 i32 i32 i64)"),
    ("on-fault", "(param i32 i32 i32 i32 i64)"),
    ("snapshot-state", ""),
    ("restore-state", "(param i32 i32)"),
];

/// A fixture guest written in WAT: every export of the callback world, each returning nothing
/// (no decisions, empty state, `ok`) unless a test gives it a body.
///
/// Memory map: 0..16 init's return area, 16..24 the (ptr, len) return area of lists,
/// 32..48 restore-state's return area, 64.. the subscribed event kinds, 256.. scratch data for
/// decisions, 4096.. the bump heap behind `cabi_realloc`.
pub struct WatGuest {
    events: Vec<u8>,
    batch_every: u32,
    init_body: Option<String>,
    bodies: BTreeMap<&'static str, String>,
    data: Vec<(u32, Vec<u8>)>,
    extra: String,
}

/// Event-kind codes, as the WIT enum orders them.
pub mod kind {
    pub const TRAIN_START: u8 = 0;
    pub const EPOCH_START: u8 = 1;
    pub const BATCH_START: u8 = 2;
    pub const BATCH_END: u8 = 3;
    pub const VALIDATION_END: u8 = 4;
    pub const EPOCH_END: u8 = 5;
    pub const CHECKPOINT_SAVED: u8 = 6;
    pub const TRAIN_END: u8 = 7;
    pub const FAULT: u8 = 8;
}

impl WatGuest {
    /// A guest subscribed to `events` (codes from [`kind`]).
    pub fn new(events: &[u8]) -> Self {
        Self {
            events: events.to_vec(),
            batch_every: 1,
            init_body: None,
            bodies: BTreeMap::new(),
            data: Vec::new(),
            extra: String::new(),
        }
    }

    /// Runs `wat` at the start of export `func` (e.g. `"on-epoch-end"`), before the default
    /// return. For `init`, `func` is `"init"`.
    pub fn body(mut self, func: &'static str, wat: &str) -> Self {
        if func == "init" {
            self.init_body = Some(wat.to_string());
        } else {
            self.bodies.insert(func, wat.to_string());
        }
        self
    }

    /// Places bytes in memory at `addr` (use 256.. for decision data).
    pub fn data(mut self, addr: u32, bytes: &[u8]) -> Self {
        self.data.push((addr, bytes.to_vec()));
        self
    }

    /// Extra module-level WAT (helper functions, globals).
    pub fn extra(mut self, wat: &str) -> Self {
        self.extra.push_str(wat);
        self
    }

    /// The WAT text of the core module.
    pub fn wat(&self) -> String {
        let events: String = self.events.iter().map(|e| format!("\\{e:02x}")).collect();
        let mut funcs = String::new();
        for (name, params) in FUNCS {
            let body = self.bodies.get(name).cloned().unwrap_or_default();
            let ret = match name {
                "restore-state" => "(i32.store8 (i32.const 32) (i32.const 0)) (i32.const 32)",
                _ => "(call $empty_list)",
            };
            funcs.push_str(&format!(
                "(func (export \"trainrt:callbacks/callback@0.1.0#{name}\") {params} (result i32)\n {body}\n {ret})\n"
            ));
        }
        let data: String = self
            .data
            .iter()
            .map(|(addr, bytes)| {
                let text: String = bytes.iter().map(|b| format!("\\{b:02x}")).collect();
                format!("(data (i32.const {addr}) \"{text}\")\n")
            })
            .collect();
        format!(
            r#"(module
  (import "trainrt:callbacks/host@0.1.0" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 64) "{events}")
  {data}
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $p i32) (local $end i32)
    ;; bump allocation, aligned to 8, growing memory as needed
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (local.set $end (i32.add (local.get $p) (local.get 3)))
    (if (i32.gt_u (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
      (then (if (i32.lt_s (memory.grow (i32.add (i32.shr_u (local.get 3) (i32.const 16)) (i32.const 1))) (i32.const 0))
        (then unreachable))))
    (global.set $heap (local.get $end))
    (local.get $p))
  (func $empty_list (result i32)
    (i32.store (i32.const 16) (i32.const 0))
    (i32.store (i32.const 20) (i32.const 0))
    (i32.const 16))
  ;; Returns `n` decisions laid out at 256 (24 bytes each).
  (func $decisions (param $n i32) (result i32)
    (i32.store (i32.const 16) (i32.const 256))
    (i32.store (i32.const 20) (local.get $n))
    (i32.const 16))
  {extra}
  (func (export "trainrt:callbacks/callback@0.1.0#init") (param i32 i32) (result i32)
    {init}
    (i32.store8 (i32.const 0) (i32.const 0))
    (i32.store (i32.const 4) (i32.const 64))
    (i32.store (i32.const 8) (i32.const {n_events}))
    (i32.store (i32.const 12) (i32.const {batch_every}))
    (i32.const 0))
  {funcs}
)"#,
            extra = self.extra,
            init = self.init_body.clone().unwrap_or_default(),
            n_events = self.events.len(),
            batch_every = self.batch_every,
        )
    }

    /// Builds the component: WAT -> core module -> embed the WIT world -> component.
    pub fn component(&self) -> Vec<u8> {
        let (resolve, world) = callback_world();
        componentize(&self.wat(), &resolve, world)
    }

    /// The core module with the WIT world embedded but not made a component: what
    /// `cargo build --target wasm32-unknown-unknown` of an SDK callback produces.
    pub fn core_module(&self) -> Vec<u8> {
        let (resolve, world) = callback_world();
        embed_world(&self.wat(), &resolve, world)
    }

    /// Writes the component to `dir/<name>.wasm` and returns the path.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.wasm"));
        std::fs::write(&path, self.component()).expect("write fixture");
        path
    }
}

/// The callback world of `wit/callbacks.wit`.
fn callback_world() -> (wit_parser::Resolve, wit_parser::WorldId) {
    let mut resolve = wit_parser::Resolve::default();
    let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
    let (pkg, _) = resolve.push_path(&wit).expect("wit parses");
    let world = resolve
        .select_world(&[pkg], Some("callback-world"))
        .expect("world");
    (resolve, world)
}

/// A core module in WAT with the metadata of `world` of `resolve` embedded.
fn embed_world(wat: &str, resolve: &wit_parser::Resolve, world: wit_parser::WorldId) -> Vec<u8> {
    let mut module = wat::parse_str(wat).expect("fixture WAT parses");
    wit_component::embed_component_metadata(
        &mut module,
        resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .expect("embed");
    module
}

/// Turns a core module in WAT into a component for `world` of `resolve`: embeds the world's
/// metadata, then encodes (and validates) the component.
pub fn componentize(
    wat: &str,
    resolve: &wit_parser::Resolve,
    world: wit_parser::WorldId,
) -> Vec<u8> {
    let module = embed_world(wat, resolve, world);
    wit_component::ComponentEncoder::default()
        .module(&module)
        .expect("module")
        .validate(true)
        .encode()
        .expect("component")
}

/// Encodes decisions in the canonical ABI layout (24 bytes each) for [`WatGuest::data`] at 256.
/// Strings go to `strings_at` onwards.
pub fn encode_decisions(decisions: &[Decision<'_>], strings_at: u32) -> (Vec<u8>, Vec<u8>) {
    let mut table = Vec::new();
    let mut strings = Vec::new();
    for d in decisions {
        let mut rec = [0u8; 24];
        let mut put_str = |s: &str, rec: &mut [u8; 24]| {
            let ptr = strings_at + strings.len() as u32;
            strings.extend_from_slice(s.as_bytes());
            rec[8..12].copy_from_slice(&ptr.to_le_bytes());
            rec[12..16].copy_from_slice(&(s.len() as u32).to_le_bytes());
        };
        match d {
            Decision::Stop(r) => put_str(r, &mut rec),
            Decision::EndEpoch => rec[0] = 1,
            Decision::Save(t) => {
                rec[0] = 2;
                put_str(t, &mut rec)
            }
            Decision::Lr(v) => {
                rec[0] = 3;
                rec[8..16].copy_from_slice(&v.to_le_bytes());
            }
            Decision::Restore(t) => {
                rec[0] = 4;
                put_str(t, &mut rec)
            }
            Decision::ValidateNow => rec[0] = 5,
            Decision::Metric(n, v) => {
                rec[0] = 6;
                put_str(n, &mut rec);
                rec[16..24].copy_from_slice(&v.to_le_bytes());
            }
        }
        table.extend_from_slice(&rec);
    }
    (table, strings)
}

/// A decision for [`encode_decisions`].
pub enum Decision<'a> {
    /// stop-training
    Stop(&'a str),
    /// end-epoch
    EndEpoch,
    /// save-checkpoint
    Save(&'a str),
    /// set-learning-rate
    Lr(f64),
    /// restore-checkpoint
    Restore(&'a str),
    /// validate-now
    ValidateNow,
    /// log-metric
    Metric(&'a str, f64),
}

/// A guest that answers `func` with `decisions` on every call.
pub fn deciding_guest(events: &[u8], func: &'static str, decisions: &[Decision<'_>]) -> WatGuest {
    let (table, strings) = encode_decisions(decisions, 2048);
    let n = decisions.len();
    WatGuest::new(events)
        .data(256, &table)
        .data(2048, &strings)
        .body(func, &format!("(return (call $decisions (i32.const {n})))"))
}

/// A tmpfs mounted for one test, unmounted on drop: a real read-only or full file system to run
/// against. Mounting needs root (as in CI); elsewhere `mount` returns `None` and the test says it
/// was skipped.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs with `options` (e.g. `size=128k` or `ro`).
    pub fn mount(options: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("a temp dir to mount on");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        }
        mounted.then_some(Self { dir })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// A digits-shaped `run-info` for driving callbacks without training: the four built-in epoch
/// metrics, then `metric_4`... up to `metrics` names.
pub fn run_info(metrics: usize) -> trainrt::contract::RunInfo {
    let mut names: Vec<String> = ["loss", "accuracy", "val_loss", "val_accuracy"]
        .map(String::from)
        .to_vec();
    names.extend((4..metrics).map(|i| format!("metric_{i}")));
    trainrt::contract::RunInfo {
        run_name: "bench".into(),
        model: "mlp(64-128-10)".into(),
        parameter_count: 9610,
        dataset: "digits".into(),
        train_samples: 1438,
        validation_samples: 359,
        epochs: 1_000_000,
        batch_size: 32,
        batches_per_epoch: 45,
        optimizer: "sgd".into(),
        initial_lr: 0.05,
        seed: 42,
        metric_names: names,
        start_epoch: 0,
        start_step: 0,
    }
}

/// Builds a workspace guest crate for wasm32-wasip2 (a component importing WASI, as other
/// languages' guests do) and returns the component's path.
pub fn wasip2_guest(package: &str) -> std::path::PathBuf {
    // Tests run on parallel threads of one binary: build one guest at a time, each once.
    static BUILT: std::sync::Mutex<BTreeMap<String, PathBuf>> =
        std::sync::Mutex::new(BTreeMap::new());
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(path) = built.get(package) {
        return path.clone();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasip2-guests");
    let status = std::process::Command::new(env!("CARGO"))
        .current_dir(&root)
        .args([
            "build",
            "--profile",
            "guest",
            "--target",
            "wasm32-wasip2",
            "-p",
            package,
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("cargo runs");
    assert!(
        status.success(),
        "building {package} for wasm32-wasip2 failed (rustup target add wasm32-wasip2)"
    );
    let path = target_dir.join(format!(
        "wasm32-wasip2/guest/{}.wasm",
        package.replace('-', "_")
    ));
    built.insert(package.to_string(), path.clone());
    path
}
