//! Builds the bundled callbacks (guest-callbacks/) for wasm32-unknown-unknown, turns each core
//! module into a component with wit-component, and embeds them in the `trainrt` binary, so a plain
//! `cargo build -p trainrt` yields one binary in which `--callback early-stopping` works.
//!
//! Each component is also precompiled here, with the sandbox's own engine configuration
//! (`src/sandbox/engine.rs`, compiled into this script too), and the artifact embedded beside it:
//! a run then starts the bundled callbacks without compiling them, even on a machine with an empty
//! compiled-component cache. The artifact only loads into an engine whose settings, wasmtime
//! version and CPU features match (wasmtime checks); anywhere else the component is compiled as
//! any other.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The bundled callbacks: (name users type, cargo package).
const BUNDLED: &[&str] = &[
    "logger",
    "early-stopping",
    "model-checkpoint",
    "lr-schedule",
    "reduce-lr-on-plateau",
    "terminate-on-nan",
];
const WASM_TARGET: &str = "wasm32-unknown-unknown";

#[path = "src/sandbox/engine.rs"]
mod engine;

fn main() {
    if let Err(message) = run() {
        // A build script's panic message is what cargo shows; keep it to the point.
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let root = manifest_dir
        .parent()
        .ok_or("runtime/ has no parent directory")?
        .to_path_buf();
    let out_dir = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?);
    println!(
        "cargo:rerun-if-changed={}",
        root.join("guest-callbacks").display()
    );
    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    println!("cargo:rerun-if-env-changed=TRAINRT_GUEST_PROFILE");

    check_wasm_target()?;

    // Share one guest target dir across host profiles when we can find cargo's target dir
    // (it holds a CACHEDIR.TAG); otherwise build inside OUT_DIR. One per checkout: the modules'
    // file names carry no hash, so two checkouts sharing a CARGO_TARGET_DIR would otherwise read
    // each other's callbacks whenever cargo finds its own build of them fresh.
    let guest_target = out_dir
        .ancestors()
        .find(|p| p.join("CACHEDIR.TAG").is_file())
        .map(|t| t.join("guest-wasm").join(checkout_id(&root)))
        .unwrap_or_else(|| out_dir.join("guest-wasm"));
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--profile",
            "guest",
            "--target",
            WASM_TARGET,
            "--target-dir",
        ])
        .arg(&guest_target);
    for name in BUNDLED {
        cmd.args(["-p", name]);
    }
    // The host's flags and wrappers are for the host target, not for wasm.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_RUSTFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run cargo to build the bundled callbacks: {e}"))?;
    if !status.success() {
        return Err("building the bundled callbacks (guest-callbacks/) for wasm32-unknown-unknown failed; see the errors above".into());
    }

    let engine = wasmtime::Engine::new(&engine::config()).map_err(|e| {
        format!("cannot configure wasmtime to precompile the bundled callbacks: {e}")
    })?;
    let mut table = String::from(
        "/// The bundled callbacks: (name, component bytes, the component precompiled for the build \
         machine).\npub(crate) static BUNDLED: &[(&str, &[u8], &[u8])] = &[\n",
    );
    for name in BUNDLED {
        let module_path = guest_target
            .join(WASM_TARGET)
            .join("guest")
            .join(format!("{}.wasm", name.replace('-', "_")));
        let module = fs::read(&module_path)
            .map_err(|e| format!("cannot read {}: {e}", module_path.display()))?;
        let component = wit_component::ComponentEncoder::default()
            .module(&module)
            .and_then(|e| e.validate(true).encode())
            .map_err(|e| {
                format!(
                    "cannot make a component of {}: {e:#}",
                    module_path.display()
                )
            })?;
        let dest = out_dir.join(format!("{name}.component.wasm"));
        write_if_changed(&dest, &component)?;
        let artifact = engine
            .precompile_component(&component)
            .map_err(|e| format!("cannot precompile the bundled callback {name}: {e:#}"))?;
        let precompiled = out_dir.join(format!("{name}.cwasm"));
        write_if_changed(&precompiled, &artifact)?;
        table.push_str(&format!(
            "    ({name:?}, include_bytes!({:?}), include_bytes!({:?})),\n",
            dest.display().to_string(),
            precompiled.display().to_string()
        ));
    }
    table.push_str("];\n");
    write_if_changed(&out_dir.join("bundled.rs"), table.as_bytes())
}

/// Fails early, with the fix, when the wasm target's standard library is not installed.
fn check_wasm_target() -> Result<(), String> {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("cannot run {rustc}: {e}"))?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if sysroot
        .join("lib/rustlib")
        .join(WASM_TARGET)
        .join("lib")
        .is_dir()
    {
        return Ok(());
    }
    Err(format!(
        "the Rust target {WASM_TARGET} is not installed, and trainrt embeds its bundled callbacks \
         compiled for it.\n       Fix: rustup target add {WASM_TARGET}"
    ))
}

/// A short, stable name for the checkout at `root` (FNV-1a of its path).
fn checkout_id(root: &Path) -> String {
    let hash = root
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{hash:016x}")
}

fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if fs::read(path).ok().as_deref() == Some(bytes) {
        return Ok(());
    }
    fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
