//! Where a callback comes from: `NAME[:k=v,...]` for a bundled callback or `PATH.wasm[:k=v,...]`
//! for a component file, with the parameters its `init` receives.

use std::path::{Path, PathBuf};

use super::CallbackError;
use crate::bundled;
use crate::sandbox::Limits;

/// Where a callback comes from and its `key=value` parameters, parsed from
/// `NAME[:k=v,...]` or `PATH.wasm[:k=v,...]`.
/// Written to config files as the string it was parsed from (`early-stopping:patience=3`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct CallbackSpec {
    /// A bundled callback's name, or a path to a `.wasm` component.
    pub source: String,
    /// Parameters passed to the callback's `init`, in order.
    pub params: Vec<(String, String)>,
}

impl std::str::FromStr for CallbackSpec {
    type Err = CallbackError;

    fn from_str(spec: &str) -> Result<Self, CallbackError> {
        let invalid = |message: String| CallbackError::InvalidSpec {
            spec: spec.to_string(),
            message,
        };
        // A path may contain ':' itself; parameters start after the `.wasm` extension.
        let (source, params) = match spec.find(".wasm:") {
            Some(i) => (&spec[..i + 5], Some(&spec[i + 6..])),
            None if spec.ends_with(".wasm") => (spec, None),
            None => match spec.split_once(':') {
                Some((s, p)) => (s, Some(p)),
                None => (spec, None),
            },
        };
        if source.is_empty() {
            return Err(invalid("missing callback name or path before ':'".into()));
        }
        if !source.ends_with(".wasm") && !bundled::names().any(|n| n == source) {
            let known: Vec<&str> = bundled::names().collect();
            return Err(invalid(format!(
                "'{source}' is neither a bundled callback ({}) nor a path ending in .wasm",
                known.join(", ")
            )));
        }
        let mut parsed = Vec::new();
        for pair in params.unwrap_or("").split(',').filter(|p| !p.is_empty()) {
            let Some((k, v)) = pair.split_once('=') else {
                return Err(invalid(format!("parameter '{pair}' is not key=value")));
            };
            let k = k.trim();
            if k.is_empty() {
                return Err(invalid(format!("parameter '{pair}' has an empty key")));
            }
            parsed.push((k.to_string(), v.trim().to_string()));
        }
        Ok(Self {
            source: source.to_string(),
            params: parsed,
        })
    }
}

impl std::fmt::Display for CallbackSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)?;
        for (i, (k, v)) in self.params.iter().enumerate() {
            write!(f, "{}{k}={v}", if i == 0 { ':' } else { ',' })?;
        }
        Ok(())
    }
}

impl From<CallbackSpec> for String {
    fn from(spec: CallbackSpec) -> String {
        spec.to_string()
    }
}

impl TryFrom<String> for CallbackSpec {
    type Error = CallbackError;
    fn try_from(spec: String) -> Result<Self, CallbackError> {
        spec.parse()
    }
}

impl CallbackSpec {
    /// The callback's display name: the bundled name or the file's stem.
    pub fn name(&self) -> String {
        if self.source.ends_with(".wasm") {
            Path::new(&self.source)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            self.source.clone()
        }
    }

    /// The component's bytes: embedded for bundled callbacks, read from disk otherwise.
    pub fn load_bytes(&self, limits: &Limits) -> Result<Vec<u8>, CallbackError> {
        if let Some(bytes) = bundled::component(&self.source) {
            return Ok(bytes.to_vec());
        }
        let path = PathBuf::from(&self.source);
        let meta = std::fs::metadata(&path).map_err(|source| CallbackError::Read {
            path: path.clone(),
            source,
        })?;
        limits.check_component_size(&self.name(), meta.len())?;
        std::fs::read(&path).map_err(|source| CallbackError::Read { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bundled_names_and_paths_with_params() {
        let s: CallbackSpec = "early-stopping:patience=3,monitor=val_loss"
            .parse()
            .unwrap();
        assert_eq!(s.source, "early-stopping");
        assert_eq!(
            s.params,
            vec![
                ("patience".into(), "3".into()),
                ("monitor".into(), "val_loss".into())
            ]
        );
        let s: CallbackSpec = "dir:with:colons/my.wasm:a=1".parse().unwrap();
        assert_eq!(s.source, "dir:with:colons/my.wasm");
        assert_eq!(s.params, vec![("a".into(), "1".into())]);
        assert_eq!(s.name(), "my");
        let s: CallbackSpec = "./cb.wasm".parse().unwrap();
        assert!(s.params.is_empty());
        assert_eq!(s.to_string(), "./cb.wasm");
    }

    #[test]
    fn rejects_bad_specs_with_reasons() {
        let e = "nope".parse::<CallbackSpec>().unwrap_err().to_string();
        assert!(
            e.contains("neither a bundled callback") && e.contains("early-stopping"),
            "{e}"
        );
        let e = "logger:verbose"
            .parse::<CallbackSpec>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("not key=value"), "{e}");
        let e = ":a=1".parse::<CallbackSpec>().unwrap_err().to_string();
        assert!(e.contains("missing callback name"), "{e}");
    }
}
