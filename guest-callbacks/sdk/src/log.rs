//! Lines for the run log, written under the callback's name.
//!
//! On wasm these call the host's `log` import. Native builds (unit tests) have no host, so lines
//! are kept in a per-thread buffer that [`take_captured`] returns.

use crate::Level;

/// Writes `message` to the run log at `level`.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::bindings::trainrt::callbacks::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    native::CAPTURED.with(|c| c.borrow_mut().push((level, message.to_string())));
}

/// Writes a debug line.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Writes an info line.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Writes a warning.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Writes an error line.
pub fn error(message: &str) {
    log(Level::Error, message);
}

/// Native builds only: the lines logged on this thread since the last call.
#[cfg(not(target_arch = "wasm32"))]
pub fn take_captured() -> Vec<(Level, String)> {
    native::CAPTURED.with(|c| std::mem::take(&mut *c.borrow_mut()))
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::cell::RefCell;

    use crate::Level;

    thread_local! {
        /// Per thread, so that parallel tests see only their own lines.
        pub(super) static CAPTURED: RefCell<Vec<(Level, String)>> = const { RefCell::new(Vec::new()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_logging_is_captured_per_thread() {
        info("hello");
        warn("careful");
        assert_eq!(
            take_captured(),
            vec![
                (Level::Info, "hello".to_string()),
                (Level::Warn, "careful".to_string())
            ]
        );
        assert!(take_captured().is_empty());
    }
}
