//! The one wasmtime configuration every callback is compiled and run with.
//!
//! `build.rs` compiles this same file to precompile the bundled callbacks: wasmtime loads an
//! artifact only into an engine configured exactly like the one that compiled it, so the build
//! and the sandbox must read their settings from one place.

/// The wasm stack every callback gets (an engine-wide setting in wasmtime).
pub const WASM_STACK_BYTES: usize = 512 * 1024;

/// Cranelift optimising for speed, the component model, fuel and epoch interruption on (a call's
/// work and wall time are both bounded), a 512 KiB wasm stack, and no concurrency support (it
/// adds cost to every call and no callback needs it).
pub fn config() -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    config
        .wasm_component_model(true)
        .cranelift_opt_level(wasmtime::OptLevel::Speed)
        .consume_fuel(true)
        .epoch_interruption(true)
        .max_wasm_stack(WASM_STACK_BYTES)
        .concurrency_support(false);
    config
}
