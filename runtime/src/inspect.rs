//! Inspecting a compiled callback component for `trainrt check`: its imports (with what the
//! sandbox does with each, see [`crate::sandbox::import_verdict`]) and its exports.

use serde::Serialize;
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

use crate::sandbox::{ImportVerdict, Sandbox, import_verdict};

/// A component's interface, as `trainrt check` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentReport {
    /// Imports with what the sandbox does with each.
    pub imports: Vec<(String, ImportVerdict)>,
    /// Exported interfaces with their functions.
    pub exports: Vec<(String, Vec<String>)>,
}

/// Lists a compiled component's imports and exports.
pub fn report(sandbox: &Sandbox, component: &Component) -> ComponentReport {
    let engine = sandbox.engine();
    let ty = component.component_type();
    let imports = ty
        .imports(engine)
        .map(|(n, _)| (n.to_string(), import_verdict(n)))
        .collect();
    let exports = ty
        .exports(engine)
        .map(|(n, e)| {
            let funcs = match e.ty {
                // Functions only: the interface's exported types are not worth listing.
                ComponentItem::ComponentInstance(i) => i
                    .exports(engine)
                    .filter(|(_, e)| matches!(e.ty, ComponentItem::ComponentFunc(_)))
                    .map(|(f, _)| f.to_string())
                    .collect(),
                _ => Vec::new(),
            };
            (n.to_string(), funcs)
        })
        .collect();
    ComponentReport { imports, exports }
}
