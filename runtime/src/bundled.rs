//! The callbacks that ship inside the `trainrt` binary, compiled by `build.rs` from
//! `guest-callbacks/` and embedded as components, each with its artifact precompiled for the
//! build machine (used when the engine matches; see [`precompiled`]).

include!(concat!(env!("OUT_DIR"), "/bundled.rs"));

/// Names of the bundled callbacks, in a stable order.
pub fn names() -> impl Iterator<Item = &'static str> {
    BUNDLED.iter().map(|(name, _, _)| *name)
}

/// The component bytes of a bundled callback, if `name` is one.
pub fn component(name: &str) -> Option<&'static [u8]> {
    BUNDLED
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, bytes, _)| *bytes)
}

/// The artifact `build.rs` precompiled for `component`, when `component` is a bundled callback's
/// exact bytes (however it was named: also a `.wasm` file written by `trainrt callbacks export`).
/// It loads only into an engine configured like the build's; the caller falls back to compiling
/// when it does not.
pub(crate) fn precompiled(component: &[u8]) -> Option<&'static [u8]> {
    BUNDLED
        .iter()
        .find(|(_, bytes, _)| *bytes == component)
        .map(|(_, _, artifact)| *artifact)
}

/// Writes every bundled callback to `dir` as `<name>.wasm`, creating `dir` if needed.
pub fn export_all(
    dir: &std::path::Path,
) -> Result<Vec<std::path::PathBuf>, crate::rundir::RunDirError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| crate::rundir::RunDirError::io("cannot create directory", dir, e))?;
    BUNDLED
        .iter()
        .map(|(name, bytes, _)| {
            let path = dir.join(format!("{name}.wasm"));
            crate::rundir::atomic_write(&path, bytes)?;
            Ok(path)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn all_six_callbacks_are_bundled_as_components() {
        let names: Vec<_> = super::names().collect();
        assert_eq!(
            names,
            [
                "logger",
                "early-stopping",
                "model-checkpoint",
                "lr-schedule",
                "reduce-lr-on-plateau",
                "terminate-on-nan"
            ]
        );
        for name in names {
            let bytes = super::component(name).unwrap();
            // A component's preamble: magic, then version 0x0d and layer 1.
            assert_eq!(
                &bytes[..8],
                b"\0asm\x0d\x00\x01\x00",
                "{name} is not a component"
            );
        }
    }
}
