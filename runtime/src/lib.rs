//! trainrt: a training runtime whose callbacks are sandboxed WebAssembly components.

pub mod rundir;
