//! Bounded compilation. Cranelift's cost depends on the shape of a component's code, not its size:
//! 7 MB of straight-line code in functions that are never called takes tens of seconds and most of
//! a gigabyte to compile, and fuel, deadlines and the memory cap only start once the component is
//! instantiated. So a component that is neither bundled nor in the
//! compiled-component cache is compiled where the [`Compiler`] says: in a child process that sets
//! its own CPU-time and memory limits first (`Limits::compile_cpu_time`,
//! `Limits::compile_memory_bytes`) and is killed past a wall-clock deadline, or, for tests and
//! embedders that opt out, in this process without bounds.
//!
//! The child is the `trainrt` binary itself (`trainrt __compile`, hidden), which calls
//! [`serve_compile`]: component bytes on stdin, the artifact of `Engine::precompile_component`,
//! with the sandbox's engine settings, on stdout. The parent deserializes that artifact as it does
//! a cache entry (the child is our own program, as trusted as the cache) and stores it in the
//! cache, so the second load is a cache hit and spawns nothing.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use wasmtime::Engine;
use wasmtime::component::Component;

use super::{Limits, Sandbox, SandboxError, describe};

/// The hidden subcommand of the `trainrt` binary that runs [`serve_compile`].
pub const COMPILE_SUBCOMMAND: &str = "__compile";

/// The child's exit code for bytes wasmtime rejects; its reason is on stderr.
const EXIT_INVALID: u8 = 3;
/// The child's exit code for a compile that failed to allocate memory.
const EXIT_OUT_OF_MEMORY: u8 = 4;
/// The child's exit code when it cannot set up its engine, threads or limits.
const EXIT_SETUP: u8 = 5;
/// The child's exit code when the compiler panicked; the panic message is on stderr.
const EXIT_PANIC: u8 = 6;
/// The most threads a child compiles on (unless `RAYON_NUM_THREADS` says otherwise).
const MAX_COMPILE_THREADS: usize = 4;
/// The most of the child's stderr kept for a message.
const MAX_STDERR_BYTES: u64 = 16 << 10;

/// How the sandbox compiles a component that is neither bundled nor in the cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Compiler {
    /// In this process, with no bound on CPU time or memory: what a library cannot avoid when it
    /// has no program to run as a child. For tests, and for embedders who compile only components
    /// they trust or bound the whole process themselves. The compile limits are ignored.
    #[default]
    InProcess,
    /// In a child process, `PROGRAM __compile`, under the callback's compile limits: the child
    /// sets `RLIMIT_CPU` to `compile_cpu_time` and `RLIMIT_DATA` to `compile_memory_bytes` before
    /// it compiles the component, and is killed if it runs past `3 × compile_cpu_time + 2 s` of
    /// wall time. It compiles on at most 4 threads (unless `RAYON_NUM_THREADS` is set), so the
    /// memory limit means the same on every machine. PROGRAM is a `trainrt` binary (the CLI
    /// passes itself), or any program that answers `__compile` by calling [`serve_compile`];
    /// wasmtime refuses its artifact unless it was compiled by an engine configured like this
    /// one.
    Process(PathBuf),
}

/// Why a compile produced no artifact.
#[derive(Debug)]
pub(crate) enum CompileError {
    /// The bytes are not a valid component; wasmtime's reason.
    Invalid(String),
    /// A compile limit stopped it.
    Limit(LimitHit),
    /// The compiler could not do its job (it could not start, crashed, or handed back something
    /// that does not load).
    Failed(String),
}

/// Which compile limit stopped a compile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum LimitHit {
    /// `compile_cpu_time`.
    CpuTime(Duration),
    /// `compile_memory_bytes`.
    Memory(usize),
    /// The wall-clock deadline derived from `compile_cpu_time`.
    WallClock(Duration),
}

/// The component for `bytes`, through the sandbox's cache and compiler, with errors that say
/// which limit stopped it and how to raise it.
pub(crate) fn load(
    sandbox: &Sandbox,
    name: &str,
    bytes: &[u8],
    limits: &Limits,
) -> Result<Component, SandboxError> {
    let engine = sandbox.engine();
    let compile = |bytes: &[u8]| sandbox.compiler().precompile(engine, bytes, limits);
    match sandbox.cache().load_or_compile(engine, bytes, compile) {
        Ok((component, _)) => Ok(component),
        Err(CompileError::Invalid(reason)) => Err(SandboxError::InvalidComponent {
            name: name.to_string(),
            message: format!("invalid component: {reason}"),
        }),
        Err(CompileError::Limit(hit)) => Err(SandboxError::CompileLimit {
            name: name.to_string(),
            message: limit_message(name, hit),
        }),
        Err(CompileError::Failed(message)) => Err(SandboxError::Compiler {
            name: name.to_string(),
            message,
        }),
    }
}

/// What a user reads when a compile limit stops a component: the limit, its value, and the
/// `--sandbox` key that raises it (with twice the value as the example).
fn limit_message(name: &str, hit: LimitHit) -> String {
    let (what, key, example) = match hit {
        LimitHit::CpuTime(limit) => {
            let effective = cpu_seconds(limit);
            (
                format!("compiling the component used more than {effective} s of CPU time"),
                "compile_cpu_time",
                format!("{}s", effective.saturating_mul(2)),
            )
        }
        LimitHit::Memory(limit) => (
            format!(
                "compiling the component needed more than {} of memory",
                size(limit)
            ),
            "compile_memory_bytes",
            size(limit.saturating_mul(2)).replace(' ', ""),
        ),
        LimitHit::WallClock(deadline) => (
            format!(
                "compiling the component took more than {} s of wall-clock time (3 × \
                 compile_cpu_time + 2 s) and was stopped",
                deadline.as_secs_f64()
            ),
            "compile_cpu_time",
            format!("{}s", deadline.as_secs().max(1)),
        ),
    };
    format!(
        "compile-limit: {what} (limit {key}). Compile cost depends on the shape of a component's \
         code, not its size; if you trust this component, raise the limit with \
         `--sandbox {name}:{key}={example}` or `{key}` in its [callbacks.limits]"
    )
}

/// A byte count in MiB when it is whole MiB, else in bytes.
fn size(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} B")
    }
}

impl Compiler {
    /// A child-process compiler running `program __compile`.
    pub fn process(program: impl Into<PathBuf>) -> Self {
        Self::Process(program.into())
    }

    /// Compiles `bytes` for `engine` into an artifact, under `limits` when in a child process.
    pub(crate) fn precompile(
        &self,
        engine: &Engine,
        bytes: &[u8],
        limits: &Limits,
    ) -> Result<Vec<u8>, CompileError> {
        match self {
            Self::InProcess => engine
                .precompile_component(bytes)
                .map_err(|e| CompileError::Invalid(describe(&e))),
            Self::Process(program) => in_child(program, bytes, limits),
        }
    }
}

/// The wall-clock deadline of a child compile: enough for a compile that gets a third of a core,
/// so a busy machine does not turn an honest compile into a refusal, while a child that stalls
/// still cannot hold up a run for long.
fn wall_deadline(limits: &Limits) -> Duration {
    limits
        .compile_cpu_time
        .saturating_mul(3)
        .saturating_add(Duration::from_secs(2))
}

/// `RLIMIT_CPU` counts whole seconds: the CPU-time limit, rounded up, at least one second.
fn cpu_seconds(limit: Duration) -> u64 {
    let whole = limit.as_secs() + u64::from(limit.subsec_nanos() > 0);
    whole.max(1)
}

/// Runs `program __compile` on `bytes` and waits for its artifact, killing it at the deadline.
fn in_child(program: &Path, bytes: &[u8], limits: &Limits) -> Result<Vec<u8>, CompileError> {
    let failed = |what: &str, e: std::io::Error| {
        CompileError::Failed(format!(
            "the compiler process ({} {COMPILE_SUBCOMMAND}) {what}: {e}",
            program.display()
        ))
    };
    let started = Instant::now();
    let deadline = wall_deadline(limits);
    let mut command = Command::new(program);
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // Memory use grows with the functions compiled at once: a fixed ceiling on threads keeps
        // `compile_memory_bytes` meaning the same on a 2-core laptop and a 64-core server.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        command.env(
            "RAYON_NUM_THREADS",
            threads.min(MAX_COMPILE_THREADS).to_string(),
        );
    }
    // A backtrace captured on an error or a failed allocation costs time and memory for
    // nothing: the parent reads only the message.
    command
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE");
    let mut child = command
        .arg(COMPILE_SUBCOMMAND)
        .arg("--cpu-time-ms")
        .arg(limits.compile_cpu_time.as_millis().to_string())
        .arg("--memory-bytes")
        .arg(limits.compile_memory_bytes.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed("could not start", e))?;
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let (waited, artifact, message) = std::thread::scope(|s| {
        // The pipes are drained on their own threads, so neither side blocks on a full pipe; a
        // child that dies early makes the write fail with EPIPE (Rust ignores SIGPIPE), which is
        // harmless: its exit status says why.
        s.spawn(move || {
            if let Some(mut stdin) = stdin {
                let _ = stdin.write_all(bytes);
            }
        });
        let artifact = s.spawn(move || {
            let mut out = Vec::new();
            stdout.map(|mut p| p.read_to_end(&mut out)).transpose()?;
            Ok::<_, std::io::Error>(out)
        });
        let message = s.spawn(move || {
            let mut out = String::new();
            if let Some(p) = stderr {
                let _ = p.take(MAX_STDERR_BYTES).read_to_string(&mut out);
            }
            out
        });
        let waited = wait_until(&mut child, started + deadline);
        // The child has exited (or was killed), so its pipes are closed and the readers finish.
        let artifact = artifact.join().unwrap_or_else(|_| Ok(Vec::new()));
        let message = message.join().unwrap_or_default();
        (waited, artifact, message)
    });
    let status = match waited {
        Ok(Some(status)) => status,
        Ok(None) => return Err(CompileError::Limit(LimitHit::WallClock(deadline))),
        Err(e) => return Err(failed("could not be waited for", e)),
    };
    let message = message.trim();
    match status.code().and_then(|c| u8::try_from(c).ok()) {
        Some(0) => artifact.map_err(|e| failed("output could not be read", e)),
        Some(EXIT_INVALID) => Err(CompileError::Invalid(message.to_string())),
        Some(EXIT_OUT_OF_MEMORY) => Err(CompileError::Limit(LimitHit::Memory(
            limits.compile_memory_bytes,
        ))),
        _ => Err(classify_exit(status, limits).unwrap_or_else(|| {
            CompileError::Failed(format!(
                "the compiler process ({} {COMPILE_SUBCOMMAND}) failed ({status}){}{message}",
                program.display(),
                if message.is_empty() { "" } else { ": " }
            ))
        })),
    }
}

/// Waits for `child` until `deadline`; past it, kills it and returns `None`.
fn wait_until(
    child: &mut std::process::Child,
    deadline: Instant,
) -> std::io::Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            // It may have exited in between; either way it is gone after `wait`.
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        // Polling costs nothing next to a compile, and a 2 ms step adds at most that to one.
        std::thread::sleep((deadline - now).min(Duration::from_millis(2)));
    }
}

/// The limit a child was stopped by, from the signal that ended it: `RLIMIT_CPU` sends SIGXCPU,
/// and an allocation that fails under `RLIMIT_DATA` aborts (SIGABRT), as Rust does on any
/// allocation failure.
#[cfg(unix)]
fn classify_exit(status: ExitStatus, limits: &Limits) -> Option<CompileError> {
    use rustix::process::Signal;
    use std::os::unix::process::ExitStatusExt;
    let signal = status.signal()?;
    if signal == Signal::XCPU.as_raw() {
        Some(CompileError::Limit(LimitHit::CpuTime(
            limits.compile_cpu_time,
        )))
    } else if signal == Signal::ABORT.as_raw() {
        Some(CompileError::Limit(LimitHit::Memory(
            limits.compile_memory_bytes,
        )))
    } else {
        None
    }
}

#[cfg(not(unix))]
fn classify_exit(_: ExitStatus, _: &Limits) -> Option<CompileError> {
    None
}

/// The child side of [`Compiler::Process`], for a binary's `__compile` subcommand: reads a
/// component from stdin, sets this process's CPU-time limit to `cpu_time` (whole seconds, rounded
/// up) and its data limit to `memory_bytes`, compiles the component with the sandbox's engine
/// settings and writes the artifact to stdout. Returns the exit code the parent reads: 0 with the
/// artifact, 3 when the bytes are not a valid component (wasmtime's reason on stderr), 4 when an
/// allocation failed gracefully, 5 when the engine, the threads or the limits could not be set
/// up, 6 when the compiler panicked, 1 on an I/O error. A compile that runs past the CPU limit is
/// killed by SIGXCPU; one that cannot allocate under the data limit aborts (SIGABRT).
pub fn serve_compile(cpu_time: Duration, memory_bytes: u64) -> u8 {
    // The default hook holds a lock while it prints a panic that an allocation failing under the
    // data limit then waits on forever (std's allocation-failure message takes the same lock):
    // print the message without it and exit.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("the compiler panicked: {info}");
        std::process::exit(i32::from(EXIT_PANIC));
    }));
    let engine = match Engine::new(&super::engine::config()) {
        Ok(engine) => engine,
        Err(e) => {
            eprintln!("cannot configure the wasm engine: {}", describe(&e));
            return EXIT_SETUP;
        }
    };
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin().lock().read_to_end(&mut bytes) {
        eprintln!("cannot read the component from stdin: {e}");
        return 1;
    }
    // Start the compile threads before the limits, so a data limit too small for their stacks is
    // an allocation that fails in the compile, not a panic in the thread pool. Everything mapped
    // so far (the engine, the input, the stacks) still counts against the limit.
    if let Err(e) = rayon::ThreadPoolBuilder::new().build_global() {
        eprintln!("cannot start the compile threads: {e}");
        return EXIT_SETUP;
    }
    if let Err(e) = set_limits(cpu_time, memory_bytes) {
        eprintln!("cannot set the compile limits: {e}");
        return EXIT_SETUP;
    }
    let artifact = match engine.precompile_component(&bytes) {
        Ok(artifact) => artifact,
        Err(e) => {
            eprintln!("{}", describe(&e));
            return if out_of_memory(&e) {
                EXIT_OUT_OF_MEMORY
            } else {
                EXIT_INVALID
            };
        }
    };
    drop(bytes);
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(&artifact).and_then(|()| stdout.flush()) {
        eprintln!("cannot write the artifact to stdout: {e}");
        return 1;
    }
    0
}

/// Whether an error comes from an allocation that failed (a mapping refused under the data
/// limit), by its type.
fn out_of_memory(err: &wasmtime::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::OutOfMemory)
    })
}

/// Bounds this process: CPU time (SIGXCPU at the soft limit, SIGKILL a second later), private
/// writable memory (heap, anonymous mappings, thread stacks: what Cranelift allocates; unlike
/// `RLIMIT_AS` it does not count the address space glibc reserves per thread), and no core dump
/// when a limit ends it.
#[cfg(unix)]
fn set_limits(cpu_time: Duration, memory_bytes: u64) -> std::io::Result<()> {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let cpu = cpu_seconds(cpu_time);
    let limit = |soft: u64, hard: u64| Rlimit {
        current: Some(soft),
        maximum: Some(hard),
    };
    setrlimit(Resource::Core, limit(0, 0))?;
    setrlimit(Resource::Cpu, limit(cpu, cpu.saturating_add(1)))?;
    setrlimit(Resource::Data, limit(memory_bytes, memory_bytes))?;
    Ok(())
}

#[cfg(not(unix))]
fn set_limits(_: Duration, _: u64) -> std::io::Result<()> {
    // No rlimits here: the parent's wall-clock deadline is the only bound.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_limit_rounds_up_to_whole_seconds() {
        assert_eq!(cpu_seconds(Duration::from_millis(1)), 1);
        assert_eq!(cpu_seconds(Duration::ZERO), 1);
        assert_eq!(cpu_seconds(Duration::from_secs(2)), 2);
        assert_eq!(cpu_seconds(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn limit_messages_name_the_limit_and_how_to_raise_it() {
        let cpu = limit_message("bomb", LimitHit::CpuTime(Duration::from_secs(2)));
        assert!(cpu.starts_with("compile-limit: "), "{cpu}");
        assert!(cpu.contains("2 s of CPU time"), "{cpu}");
        assert!(cpu.contains("--sandbox bomb:compile_cpu_time="), "{cpu}");
        let memory = limit_message("bomb", LimitHit::Memory(512 << 20));
        assert!(memory.contains("512 MiB"), "{memory}");
        assert!(
            memory.contains("--sandbox bomb:compile_memory_bytes="),
            "{memory}"
        );
        let wall = limit_message("bomb", LimitHit::WallClock(Duration::from_secs(8)));
        assert!(wall.contains("8 s of wall-clock time"), "{wall}");
        assert!(wall.contains("--sandbox bomb:compile_cpu_time="), "{wall}");
    }

    #[test]
    fn in_process_compiles_and_rejects_like_wasmtime() {
        let engine = Engine::new(&super::super::engine::config()).unwrap();
        let limits = Limits::default();
        let bytes = crate::bundled::component("logger").unwrap();
        let artifact = Compiler::InProcess
            .precompile(&engine, bytes, &limits)
            .unwrap();
        assert!(!artifact.is_empty());
        let err = Compiler::InProcess
            .precompile(&engine, b"\0asm\x0d\0\x01\0junk", &limits)
            .unwrap_err();
        assert!(matches!(err, CompileError::Invalid(_)), "{err:?}");
    }

    #[test]
    fn a_compiler_program_that_cannot_start_is_a_compiler_failure() {
        let engine = Engine::new(&super::super::engine::config()).unwrap();
        let err = Compiler::process("/nonexistent/trainrt")
            .precompile(&engine, b"\0asm", &Limits::default())
            .unwrap_err();
        match err {
            CompileError::Failed(m) => assert!(m.contains("could not start"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wall_deadline_allows_a_third_of_a_core() {
        let limits = Limits {
            compile_cpu_time: Duration::from_secs(4),
            ..Limits::default()
        };
        assert_eq!(wall_deadline(&limits), Duration::from_secs(14));
    }
}
