//! The one place that runs `wit_bindgen::generate!` against `wit/callbacks.wit`.
//!
//! Public only so that `export_callback!`, expanded in a callback crate, can name the generated
//! export glue; callback authors use the re-exports at the crate root instead.

// The generated glue is raw canonical-ABI code: unsafe by nature, and its WIT-derived items are
// not all documented (record fields without WIT docs).
#![allow(unsafe_code, missing_docs)]

wit_bindgen::generate!({
    path: "../../wit",
    world: "callback-world",
    // `export_callback!` expands in the callback's crate, so the raw export macro must be
    // reachable from there; it is renamed so that nobody mistakes it for the public entry point.
    pub_export_macro: true,
    export_macro_name: "__export_raw",
    // Tests compare decisions with `assert_eq!`.
    additional_derives: [PartialEq],
});
