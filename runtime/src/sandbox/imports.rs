//! What a guest may import, and the checks a component passes before it is compiled into
//! anything the sandbox will run: a component (a core module carrying the callback world is made
//! one first), for this world, importing nothing the sandbox does not grant.

use serde::Serialize;
use wasmtime::component::Component;

use super::{Limits, Sandbox, SandboxError};
use crate::contract::HOST_INTERFACE;

/// What the sandbox does with an import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImportVerdict {
    /// Part of the callback contract.
    Contract,
    /// WASI, granted with deterministic stand-ins (frozen clocks, seeded randomness, captured
    /// stdout/stderr, no env or args).
    Granted,
    /// WASI that can do nothing here (no preopened directories, every address denied). Refused
    /// unless the operator sets `inert_wasi` for the callback: language runtimes such as Python's
    /// and JavaScript's import these interfaces wholesale even when the callback never uses them.
    Inert,
    /// Not offered; a component importing it is rejected.
    Refused,
}

/// Decides what the sandbox does with an import, by its interface name.
pub fn import_verdict(name: &str) -> ImportVerdict {
    let interface = name.split('@').next().unwrap_or(name);
    if name.starts_with("trainrt:callbacks/") {
        return ImportVerdict::Contract;
    }
    match interface.split('/').next().unwrap_or("") {
        "wasi:cli" | "wasi:io" | "wasi:clocks" | "wasi:random" => ImportVerdict::Granted,
        "wasi:filesystem" | "wasi:sockets" => ImportVerdict::Inert,
        _ => ImportVerdict::Refused,
    }
}

/// Compiles `bytes` into a component after checking it is one, with errors that say what the
/// bytes are and how to get a component.
pub(crate) fn compile(
    sandbox: &Sandbox,
    name: &str,
    bytes: &[u8],
    limits: &Limits,
) -> Result<Component, SandboxError> {
    let invalid = |message: String| SandboxError::InvalidComponent {
        name: name.to_string(),
        message,
    };
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(invalid(
            "not a WebAssembly file (it does not start with the \\0asm magic bytes)".into(),
        ));
    }
    if bytes[4..8] == [1, 0, 0, 0] {
        let component = component_of_module(bytes).map_err(invalid)?;
        return compile(sandbox, name, &component, limits);
    }
    let component = super::compile::load(sandbox, name, bytes, limits)?;
    let refused = imports_with(sandbox, &component, ImportVerdict::Refused);
    if !refused.is_empty() {
        return Err(invalid(format!(
            "imports {} which the sandbox does not grant; a callback may import only {HOST_INTERFACE} \
             and the WASI command interfaces (cli, io, clocks, random)",
            refused.join(", ")
        )));
    }
    Ok(component)
}

/// Makes a component of a core module that carries the callback world, as `runtime/build.rs` does
/// for the bundled callbacks: what `cargo build --target wasm32-unknown-unknown` makes of a
/// callback written with the SDK (or any wit-bindgen guest, whose bindings embed the world), so
/// its author needs no `wasm-tools component new` step. A module without the world, or one that
/// needs an adapter (WASI preview 1 imports), is refused with what to do instead.
fn component_of_module(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let carries_world = wit_component::metadata::decode(bytes)
        .map_err(|e| format!("is a core wasm module that cannot be read: {e:#}"))?
        .0
        .is_some();
    if !carries_world {
        return Err(
            "is a core wasm module without the callback world embedded, so it cannot be made a \
             component: build it with the trainrt SDK or wit-bindgen for `callback-world` (their \
             bindings embed it), for wasm32-wasip2, or wrap it with `wasm-tools component new`; \
             see docs/writing-callbacks.md"
                .into(),
        );
    }
    wit_component::ComponentEncoder::default()
        .module(bytes)
        .and_then(|encoder| encoder.validate(true).encode())
        .map_err(|e| {
            format!(
                "is a core wasm module that cannot be made a component ({}): build it for \
                 wasm32-unknown-unknown with the SDK, or for wasm32-wasip2 (WASI preview 1 \
                 modules need `wasm-tools component new --adapt`)",
                crate::sandbox::printable(&one_line(&format!("{e:#}")), 512)
            )
        })
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The component's imports that get `verdict`.
fn imports_with(sandbox: &Sandbox, component: &Component, verdict: ImportVerdict) -> Vec<String> {
    component
        .component_type()
        .imports(sandbox.engine())
        .map(|(n, _)| n.to_string())
        .filter(|n| import_verdict(n) == verdict)
        .collect()
}

/// Checks a component's [`ImportVerdict::Inert`] imports against the operator's grant: without
/// `inert_wasi`, a callback importing `wasi:filesystem` or `wasi:sockets` is rejected, with a
/// message saying how to allow it.
pub(crate) fn check_grants(
    sandbox: &Sandbox,
    component: &Component,
    name: &str,
    inert_wasi: bool,
) -> Result<(), SandboxError> {
    if inert_wasi {
        return Ok(());
    }
    let inert = imports_with(sandbox, component, ImportVerdict::Inert);
    if inert.is_empty() {
        return Ok(());
    }
    Err(SandboxError::InvalidComponent {
        name: name.to_string(),
        message: format!(
            "imports {} which the sandbox refuses by default. If a language runtime imports them \
             without using them (componentize-py and componentize-js do), let the callback link \
             them with nothing behind them (no directories, no network): set `inert_wasi = true` \
             in its [[callbacks]] entry or pass `--sandbox {name}:inert_wasi=true`",
            inert.join(", ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_verdicts() {
        assert_eq!(
            import_verdict("trainrt:callbacks/host@0.1.0"),
            ImportVerdict::Contract
        );
        assert_eq!(
            import_verdict("wasi:cli/stdout@0.2.6"),
            ImportVerdict::Granted
        );
        assert_eq!(
            import_verdict("wasi:random/random@0.2.0"),
            ImportVerdict::Granted
        );
        assert_eq!(
            import_verdict("wasi:filesystem/preopens@0.2.0"),
            ImportVerdict::Inert
        );
        assert_eq!(
            import_verdict("wasi:http/outgoing-handler@0.2.0"),
            ImportVerdict::Refused
        );
        assert_eq!(import_verdict("evil:host/escape"), ImportVerdict::Refused);
    }
}
