//! Bounded compilation (issue "Bounded cost per run"): compile cost depends on the shape of a
//! component's code, not its size, so a component that is neither bundled nor cached compiles in
//! a child process under its callback's `compile_cpu_time` and `compile_memory_bytes`. A "compile
//! bomb" is refused with `compile-limit` through the real `trainrt` binary; a component within its
//! limits compiles once and then loads from the cache without compiling.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use trainrt::sandbox::{Compiler, ComponentCache, Limits, SandboxError};
use trainrt::{CompiledCallback, Sandbox};

use crate::common::{WatGuest, kind, stderr_of as stderr};

/// A callback with `functions` never-called functions of `statements` straight-line statements
/// each, every value kept live to the end of its function: about a second of Cranelift register
/// allocation per 150 KB of code, and a function of 300,000 statements takes half a gigabyte.
fn compile_bomb(functions: usize, statements: usize) -> Vec<u8> {
    let mut extra = String::with_capacity(functions * statements * 48);
    for _ in 0..functions {
        extra.push_str("(func (param i64) (result i64)\n");
        for i in 0..statements {
            extra.push_str(&format!("(i64.add (local.get 0) (i64.const {i}))\n"));
        }
        for _ in 1..statements {
            extra.push_str("i64.add\n");
        }
        extra.push_str(")\n");
    }
    WatGuest::new(&[kind::EPOCH_END]).extra(&extra).component()
}

/// Several seconds of CPU time to compile (3.6 MB): far past a one-second limit.
fn cpu_bomb() -> &'static [u8] {
    static BOMB: OnceLock<Vec<u8>> = OnceLock::new();
    BOMB.get_or_init(|| compile_bomb(24, 20_000))
}

/// One function large enough to need hundreds of MiB to compile (2.4 MB).
fn memory_bomb() -> Vec<u8> {
    compile_bomb(1, 300_000)
}

/// `trainrt ARGS` in `cwd`, caching compiled components in `cache` only.
fn trainrt(args: &[&str], cwd: &Path, cache: &Path) -> Output {
    crate::common::run_trainrt(args, cwd, &[("TRAINRT_CACHE_DIR", cache)])
}

/// Asserts a usage error (exit 2) that names `compile-limit`, the limit, and the `--sandbox`
/// flag that raises it for this callback.
fn assert_compile_limit(out: &Output, callback: &str, limit: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    for fragment in [
        "trainrt: ",
        "compile-limit",
        &format!("(limit {limit})"),
        &format!("--sandbox {callback}:{limit}="),
    ] {
        assert!(err.contains(fragment), "stderr lacks {fragment:?}: {err}");
    }
}

/// The compiled-component cache's entries.
fn cache_entries(cache: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(cache)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// A sandbox that compiles in the `trainrt` binary under test, caching nowhere.
fn bounded_sandbox() -> Sandbox {
    Sandbox::with_cache(ComponentCache::at(None))
        .expect("sandbox")
        .with_compiler(Compiler::process(env!("CARGO_BIN_EXE_trainrt")))
}

#[test]
fn check_refuses_a_compile_bomb_at_its_cpu_time_limit_and_caches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    std::fs::write(dir.path().join("bomb.wasm"), cpu_bomb()).unwrap();
    let out = trainrt(
        &[
            "check",
            "bomb.wasm",
            "--sandbox",
            "bomb:compile_cpu_time=1s",
        ],
        dir.path(),
        &cache,
    );
    assert_compile_limit(&out, "bomb", "compile_cpu_time");
    assert!(stderr(&out).contains("1 s of CPU time"), "{}", stderr(&out));
    assert!(cache_entries(&cache).is_empty());
}

#[test]
fn run_and_replay_compile_under_the_same_limits() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    std::fs::write(dir.path().join("bomb.wasm"), cpu_bomb()).unwrap();
    let events =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/events/digits.events.jsonl");
    let replay = trainrt(
        &[
            "replay",
            events.to_str().unwrap(),
            "--callback",
            "bomb.wasm",
            "--sandbox",
            "bomb:compile_cpu_time=1s",
        ],
        dir.path(),
        &cache,
    );
    assert_compile_limit(&replay, "bomb", "compile_cpu_time");
    let run = trainrt(
        &[
            "run",
            "--epochs",
            "1",
            "--run-dir",
            "run",
            "--callback",
            "bomb.wasm",
            "--sandbox",
            "bomb:compile_cpu_time=1s",
        ],
        dir.path(),
        &cache,
    );
    assert_compile_limit(&run, "bomb", "compile_cpu_time");
    assert!(
        !dir.path().join("run").exists(),
        "refused before the run began"
    );
}

#[test]
fn a_compile_bomb_is_refused_at_its_memory_limit() {
    let sandbox = bounded_sandbox();
    let limits = Limits {
        compile_memory_bytes: 128 << 20,
        ..Limits::default()
    };
    let err = CompiledCallback::with_limits(&sandbox, "hungry", &memory_bomb(), &limits)
        .err()
        .expect("refused");
    match &err {
        SandboxError::CompileLimit { name, message } => {
            assert_eq!(name, "hungry");
            assert!(message.starts_with("compile-limit: "), "{message}");
            assert!(message.contains("128 MiB"), "{message}");
            assert!(
                message.contains("--sandbox hungry:compile_memory_bytes="),
                "{message}"
            );
        }
        other => panic!("expected a compile limit, got {other}"),
    }
}

#[test]
fn invalid_bytes_compiled_in_a_child_are_an_invalid_component_not_a_limit() {
    let err = CompiledCallback::with_limits(
        &bounded_sandbox(),
        "junk",
        b"\0asm\x0d\0\x01\0junk",
        &Limits::default(),
    )
    .err()
    .expect("refused");
    match &err {
        SandboxError::InvalidComponent { message, .. } => {
            assert!(message.starts_with("invalid component: "), "{message}")
        }
        other => panic!("expected an invalid component, got {other}"),
    }
}

#[test]
fn a_component_within_its_limits_compiles_once_then_loads_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    // The same shape as the bomb, small enough for the default limits.
    std::fs::write(dir.path().join("small.wasm"), compile_bomb(2, 2_000)).unwrap();
    let first = trainrt(&["check", "small.wasm", "--json"], dir.path(), &cache);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let report: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    let defaults = Limits::default();
    assert_eq!(
        report["limits"]["compile_cpu_time"],
        u64::try_from(defaults.compile_cpu_time.as_millis()).unwrap()
    );
    assert_eq!(
        report["limits"]["compile_memory_bytes"],
        defaults.compile_memory_bytes
    );
    assert_eq!(cache_entries(&cache).len(), 1, "the artifact was stored");

    // Under a memory limit no compile fits in, it still loads: from the cache, compiling nothing.
    let starved = ["--sandbox", "small:compile_memory_bytes=1MiB"];
    let second = trainrt(
        &[&["check", "small.wasm"][..], &starved].concat(),
        dir.path(),
        &cache,
    );
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    let text = String::from_utf8_lossy(&second.stdout);
    let expected = format!(
        "compile limits: {} s CPU time, 1 MiB memory",
        defaults.compile_cpu_time.as_secs()
    );
    assert!(text.contains(&expected), "{text}");

    // Without the cache entry, the same limit refuses it.
    let fresh = dir.path().join("fresh-cache");
    let third = trainrt(
        &[&["check", "small.wasm"][..], &starved].concat(),
        dir.path(),
        &fresh,
    );
    assert_compile_limit(&third, "small", "compile_memory_bytes");
}

#[test]
fn compile_limits_are_sandbox_keys() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let out = trainrt(
        &["check", "logger", "--sandbox", "compile_cpu_time=soon"],
        dir.path(),
        &cache,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("compile_cpu_time=soon: expected a duration"));
    let out = trainrt(
        &[
            "check",
            "logger",
            "--sandbox",
            "compile_cpu_time=30s,compile_memory_bytes=2GiB",
        ],
        dir.path(),
        &cache,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("compile limits: 30 s CPU time, 2048 MiB memory"),
        "{text}"
    );
}

/// Writes the benchmark's compile bomb, the size of the 7.4 MB component (three functions
/// of 300,000 statements: 7.2 MB), for measuring what it costs with and without the limits
/// (BENCHMARKS.md):
/// `cargo test -p trainrt --test all bounded_compile::write_benchmark_bomb -- --ignored --nocapture`
#[test]
#[ignore = "writes a benchmark input; run by hand"]
fn write_benchmark_bomb() {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("compile-bomb.wasm");
    let bomb = compile_bomb(3, 300_000);
    std::fs::write(&path, &bomb).unwrap();
    println!("{} ({} bytes)", path.display(), bomb.len());
}
