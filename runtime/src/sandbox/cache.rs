//! The compiled-component cache: Cranelift output for each component, keyed by the component's
//! content hash and the engine's compatibility hash, so a callback is compiled once per machine
//! instead of once per run (a Python callback takes seconds to compile).
//!
//! Only files this cache wrote are ever deserialized, and only after their checksum matches, the
//! artifacts `build.rs` precompiled into this binary for the bundled callbacks, or what the
//! sandbox's compiler (`compile.rs`) just produced: a user-supplied `.wasm` is always compiled
//! from its bytes, never loaded as native code.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::compile::CompileError;

/// Starts every cache file, before the artifact's SHA-256 and the artifact.
const MAGIC: &[u8; 16] = b"trainrt-cwasm-1\n";
/// The cache's size bound: past it, the least recently used entries are removed.
const MAX_CACHE_BYTES: u64 = 1 << 30;

/// Where compiled components are kept, if anywhere.
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: Option<PathBuf>,
    /// Whether the bundled callbacks load from the artifacts precompiled into the binary.
    builtin: bool,
}

/// How the cache got a component, for stats and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// A bundled callback, loaded from the artifact precompiled into the binary.
    Builtin,
    /// Loaded from the cache.
    Hit,
    /// Compiled, and stored for next time.
    Stored,
    /// Compiled; the cache is off or could not be written.
    Compiled,
}

impl ComponentCache {
    /// The cache directory from the environment: `TRAINRT_CACHE_DIR` (`off` disables caching),
    /// else `$XDG_CACHE_HOME/trainrt/components`, else `$HOME/.cache/trainrt/components`.
    pub fn from_env() -> Self {
        let dir = match std::env::var_os("TRAINRT_CACHE_DIR") {
            Some(v) if v == "off" || v.is_empty() => None,
            Some(v) => Some(PathBuf::from(v)),
            None => std::env::var_os("XDG_CACHE_HOME")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
                .map(|base| base.join("trainrt").join("components")),
        };
        Self::at(dir)
    }

    /// A cache in `dir`, or none. Bundled callbacks load precompiled either way.
    pub fn at(dir: Option<PathBuf>) -> Self {
        Self { dir, builtin: true }
    }

    /// Whether bundled callbacks load from the artifacts precompiled into the binary (the
    /// default) or are compiled like any other component (to measure compiling them).
    pub fn with_builtin(mut self, builtin: bool) -> Self {
        self.builtin = builtin;
        self
    }

    /// The cache directory, if caching is on.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The component for `bytes`: the bundled artifact, else from the cache when an intact entry
    /// exists, else compiled by `compile` (which returns the artifact; the sandbox's compiler,
    /// bounded or not, see `compile.rs`) and stored. Cache problems never fail a load; they only
    /// cost a compile.
    pub(crate) fn load_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
        compile: impl FnOnce(&[u8]) -> Result<Vec<u8>, CompileError>,
    ) -> Result<(Component, CacheOutcome), CompileError> {
        // A bundled callback needs no compile where the build's engine matches this one.
        let builtin = self
            .builtin
            .then(|| crate::bundled::precompiled(bytes))
            .flatten();
        if let Some(component) = builtin.and_then(|artifact| deserialize(engine, artifact).ok()) {
            return Ok((component, CacheOutcome::Builtin));
        }
        let path = self
            .dir
            .as_ref()
            .map(|dir| dir.join(format!("{}.cwasm", key(engine, bytes))));
        if let Some(component) = path.as_deref().and_then(|path| load(engine, path)) {
            if let Some(path) = &path {
                // Mark it recently used, for eviction; failing to is harmless.
                let _ = std::fs::File::options()
                    .append(true)
                    .open(path)
                    .and_then(|f| f.set_modified(std::time::SystemTime::now()));
            }
            return Ok((component, CacheOutcome::Hit));
        }
        // Validates and compiles exactly as `Component::new` would, but keeps the artifact.
        let artifact = compile(bytes)?;
        let component = deserialize(engine, &artifact).map_err(|e| {
            CompileError::Failed(format!(
                "the compiled component does not load: {}",
                super::describe(&e)
            ))
        })?;
        let stored = match (&self.dir, &path) {
            (Some(dir), Some(path)) => store(dir, path, &artifact).is_ok(),
            _ => false,
        };
        let outcome = if stored {
            CacheOutcome::Stored
        } else {
            CacheOutcome::Compiled
        };
        Ok((component, outcome))
    }
}

/// SHA-256 over the component's bytes and everything that makes an artifact usable by this
/// engine (wasmtime's version, target and settings), in hex.
fn key(engine: &Engine, bytes: &[u8]) -> String {
    struct Feed<'a>(&'a mut Sha256);
    impl Hasher for Feed<'_> {
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
        fn finish(&self) -> u64 {
            0
        }
    }
    let mut digest = Sha256::new();
    digest.update(bytes);
    engine
        .precompile_compatibility_hash()
        .hash(&mut Feed(&mut digest));
    hex(&digest.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads an entry and checks it is whole and ours before deserializing it.
fn load(engine: &Engine, path: &Path) -> Option<Component> {
    let file = std::fs::read(path).ok()?;
    let rest = file.strip_prefix(MAGIC.as_slice())?;
    let (sum, artifact) = rest.split_at_checked(32)?;
    if Sha256::digest(artifact).as_slice() != sum {
        return None;
    }
    deserialize(engine, artifact).ok()
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `artifact` is what `precompile_component` just returned, in this process or in
    // the sandbox's compiler process (our own program, given by whoever built the `Sandbox`:
    // as trusted as this binary and this cache), a cache entry this module wrote whose SHA-256
    // still matches what it wrote, or an artifact `build.rs` precompiled and embedded in this
    // binary; wasmtime additionally checks that it was compiled by a compatible engine.
    // User-supplied bytes never get here.
    unsafe { Component::deserialize(engine, artifact) }
}

fn store(dir: &Path, path: &Path, artifact: &[u8]) -> std::io::Result<()> {
    create_private_dir(dir)?;
    let mut file = Vec::with_capacity(MAGIC.len() + 32 + artifact.len());
    file.extend_from_slice(MAGIC);
    file.extend_from_slice(&Sha256::digest(artifact));
    file.extend_from_slice(artifact);
    crate::rundir::atomic_write(path, &file).map_err(std::io::Error::other)?;
    evict(dir, MAX_CACHE_BYTES);
    Ok(())
}

/// Removes the least recently used entries until the cache fits in `max_bytes`.
fn evict(dir: &Path, max_bytes: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((meta.modified().ok()?, meta.len(), e.path()))
        })
        .collect();
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    files.sort();
    for (_, len, path) in files {
        if total <= max_bytes {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            total -= len;
        }
    }
}

/// The cache holds native code: keep it readable and writable by this user only.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

#[cfg(test)]
mod tests {
    use super::super::Limits;
    use super::super::compile::{Compiler, LimitHit};
    use super::*;

    /// Loads through the cache, compiling in this process on a miss.
    fn load_or_compile(
        cache: &ComponentCache,
        engine: &Engine,
        bytes: &[u8],
    ) -> Result<(Component, CacheOutcome), CompileError> {
        cache.load_or_compile(engine, bytes, |b| {
            Compiler::InProcess.precompile(engine, b, &Limits::default())
        })
    }

    fn component_bytes() -> Vec<u8> {
        crate::bundled::component("terminate-on-nan")
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    }

    #[test]
    fn second_load_is_a_hit_and_a_damaged_entry_is_recompiled() {
        let engine = Engine::default();
        let dir = tempfile::tempdir().unwrap();
        let cache = ComponentCache::at(Some(dir.path().join("c")));
        let bytes = component_bytes();
        let (_, first) = load_or_compile(&cache, &engine, &bytes).unwrap();
        assert_eq!(first, CacheOutcome::Stored);
        let (_, second) = load_or_compile(&cache, &engine, &bytes).unwrap();
        assert_eq!(second, CacheOutcome::Hit);

        // Flip one byte of the artifact: the checksum no longer matches, so it is recompiled.
        let entry = std::fs::read_dir(dir.path().join("c"))
            .unwrap()
            .flatten()
            .find(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            .unwrap()
            .path();
        let mut damaged = std::fs::read(&entry).unwrap();
        let last = damaged.len() - 1;
        damaged[last] ^= 0xff;
        std::fs::write(&entry, damaged).unwrap();
        let (_, third) = load_or_compile(&cache, &engine, &bytes).unwrap();
        assert_eq!(third, CacheOutcome::Stored);
    }

    #[test]
    fn a_hit_compiles_nothing_and_a_refused_compile_stores_nothing() {
        let engine = Engine::default();
        let dir = tempfile::tempdir().unwrap();
        let cache = ComponentCache::at(Some(dir.path().join("c")));
        let bytes = component_bytes();
        let refused = cache.load_or_compile(&engine, &bytes, |_| {
            Err(CompileError::Limit(LimitHit::CpuTime(
                std::time::Duration::from_secs(1),
            )))
        });
        assert!(matches!(refused, Err(CompileError::Limit(_))));
        assert!(!dir.path().join("c").exists());

        load_or_compile(&cache, &engine, &bytes).unwrap();
        let (_, outcome) = cache
            .load_or_compile(&engine, &bytes, |_| panic!("a hit compiles nothing"))
            .unwrap();
        assert_eq!(outcome, CacheOutcome::Hit);
    }

    #[test]
    fn bundled_callbacks_load_precompiled_where_the_engine_matches() {
        let engine = Engine::new(&super::super::engine::config()).unwrap();
        let cache = ComponentCache::at(None);
        for name in crate::bundled::names() {
            let bytes = crate::bundled::component(name).unwrap();
            let (_, outcome) = load_or_compile(&cache, &engine, bytes).unwrap();
            assert_eq!(outcome, CacheOutcome::Builtin, "{name}");
        }
        // Turned off, a bundled callback compiles like any component.
        let off = cache.with_builtin(false);
        let (_, outcome) = load_or_compile(&off, &engine, &component_bytes()).unwrap();
        assert_eq!(outcome, CacheOutcome::Compiled);
    }

    #[test]
    fn only_a_bundled_callbacks_exact_bytes_get_its_artifact() {
        let bytes = component_bytes();
        assert!(crate::bundled::precompiled(&bytes).is_some());
        // One byte different, or one byte short, is another component.
        let mut other = bytes.clone();
        let last = other.len() - 1;
        other[last] ^= 0x01;
        assert!(crate::bundled::precompiled(&other).is_none());
        assert!(crate::bundled::precompiled(&bytes[..bytes.len() - 1]).is_none());
    }

    #[test]
    fn an_engine_unlike_the_builds_compiles_instead() {
        // No fuel and no epochs: wasmtime refuses the build's artifact, so the bytes compile.
        let engine = Engine::default();
        let (_, outcome) =
            load_or_compile(&ComponentCache::at(None), &engine, &component_bytes()).unwrap();
        assert_eq!(outcome, CacheOutcome::Compiled);
    }

    #[test]
    fn eviction_removes_the_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        for (name, age) in [("a", old), ("b", std::time::SystemTime::now())] {
            let path = dir.path().join(format!("{name}.cwasm"));
            std::fs::write(&path, [0u8; 100]).unwrap();
            std::fs::File::options()
                .append(true)
                .open(&path)
                .unwrap()
                .set_modified(age)
                .unwrap();
        }
        evict(dir.path(), 150);
        assert!(!dir.path().join("a.cwasm").exists());
        assert!(dir.path().join("b.cwasm").exists());
    }

    #[test]
    fn invalid_bytes_are_an_error_and_nothing_is_stored() {
        let engine = Engine::default();
        let dir = tempfile::tempdir().unwrap();
        let cache = ComponentCache::at(Some(dir.path().join("c")));
        assert!(load_or_compile(&cache, &engine, b"\0asm\x0d\0\x01\0junk").is_err());
        assert!(!dir.path().join("c").exists());
    }
}
