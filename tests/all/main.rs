//! The integration tests, one binary with a module per capability (linking wasmtime and candle
//! once instead of once per capability). Run one capability with `cargo test --test all sandbox_limits::`.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

mod bounded_compile;
mod checkpoint_resume;
mod cli;
mod decisions;
mod fuzz;
mod guest_abi;
mod pinned;
mod run_budgets;
mod run_files;
mod sandbox_limits;
mod serve;
mod serve_harness;
mod training;
mod wasi_guests;
