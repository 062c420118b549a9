//! What a tenant may submit: a run configuration whose callbacks and data are bundled or the
//! tenant's own uploads (never a path on the server), on the CPU, with sandbox limits within the
//! tenant's ceilings, while its quotas last.

use std::path::Path;

use serde_json::{Map, Value};
use trainrt::config::TrainConfig;
use trainrt::data::DataSpec;
use trainrt::device::DeviceSpec;
use trainrt::{Limits, bundled};

use crate::artifacts::Artifacts;
use crate::model::{Tenant, UploadKind, Usage};
use crate::store::{Store, StoreError};

/// Why a submission was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The configuration is not a valid run configuration, or asks for what a job may not.
    #[error("{0}")]
    Invalid(String),
    /// It names an upload the tenant does not have.
    #[error("{0}")]
    UnknownUpload(String),
    /// A quota is used up.
    #[error("{0}")]
    QuotaExhausted(String),
    /// The store failed (or the queue is full).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A job's configuration in its two forms.
#[derive(Debug, Clone)]
pub struct Submission {
    /// As the tenant submitted it, with every default filled in (shown back to the tenant).
    pub shown: TrainConfig,
    /// With uploads resolved to their content hashes (`<sha256>.<name>`: the bytes, and the name
    /// the run shows) and sandbox limits within the tenant's ceilings: what runs.
    pub resolved: TrainConfig,
}

/// Checks a submitted configuration against what `tenant` may do, and resolves its uploads.
pub async fn resolve(
    store: &dyn Store,
    tenant: &Tenant,
    body: Value,
) -> Result<Submission, SubmitError> {
    let shown: TrainConfig = serde_json::from_value(body)
        .map_err(|e| SubmitError::Invalid(format!("invalid job configuration: {e}")))?;
    shown
        .validate()
        .map_err(|e| SubmitError::Invalid(trainrt::error_chain(&e)))?;
    let mut resolved = shown.clone();
    if resolved.device != DeviceSpec::Cpu {
        return Err(SubmitError::Invalid(
            "device: this service trains on the CPU; leave `device` out or set it to \"cpu\""
                .into(),
        ));
    }
    if let DataSpec::Csv { path, .. } = &mut resolved.data {
        let name = upload_name(&path.to_string_lossy(), "data")?;
        let upload = store
            .upload(tenant.id, UploadKind::Dataset, &name)
            .await?
            .ok_or_else(|| {
                SubmitError::UnknownUpload(format!(
                    "data: you have no dataset named '{name}'; upload it first (POST /v1/datasets, \
                     or `trainrt remote datasets upload FILE`)"
                ))
            })?;
        *path = format!("{}.{}", upload.sha256, upload.name).into();
    }
    for (i, callback) in resolved.callbacks.iter_mut().enumerate() {
        let source = callback.spec.source.clone();
        if !bundled::names().any(|n| n == source) {
            let name = upload_name(&source, &format!("callbacks[{i}]"))?;
            let upload = store
                .upload(tenant.id, UploadKind::Callback, &name)
                .await?
                .ok_or_else(|| {
                    SubmitError::UnknownUpload(format!(
                        "callbacks[{i}]: you have no callback named '{name}'; upload it first \
                         (POST /v1/callbacks, or `trainrt remote callbacks upload FILE`)"
                    ))
                })?;
            callback.spec.source = format!("{}.{}", upload.sha256, upload.name);
        }
        callback.limits = within_ceilings(&callback.limits, &tenant.quota.sandbox)
            .map_err(|m| SubmitError::Invalid(format!("callbacks[{i}].limits: {m}")))?;
    }
    Ok(Submission { shown, resolved })
}

/// Refuses a submission while one of the tenant's cumulative quotas is used up.
pub fn check_usage(tenant: &Tenant, usage: &Usage) -> Result<(), SubmitError> {
    let quota = &tenant.quota;
    let exhausted = |what: &str, used: String, limit: String| {
        Err(SubmitError::QuotaExhausted(format!(
            "your {what} quota is used up ({used} of {limit}); ask the operator for more, or \
             delete old jobs' data"
        )))
    };
    if usage.cpu_seconds >= quota.cpu_seconds {
        return exhausted(
            "CPU-seconds",
            format!("{:.1}", usage.cpu_seconds),
            format!("{:.1}", quota.cpu_seconds),
        );
    }
    if usage.storage_bytes >= quota.storage_bytes {
        return exhausted(
            "storage",
            format!("{} bytes", usage.storage_bytes),
            format!("{} bytes", quota.storage_bytes),
        );
    }
    if usage.fuel >= quota.fuel {
        return exhausted("fuel", usage.fuel.to_string(), quota.fuel.to_string());
    }
    Ok(())
}

/// The upload a job names: a bare name (`stop_at.wasm`, `iris.csv`) or `sha256:HEX[.ext]`,
/// never a path.
fn upload_name(given: &str, field: &str) -> Result<String, SubmitError> {
    let refused = given.contains(['/', '\\', '\0'])
        || given.starts_with('.')
        || given.contains("..")
        || given.is_empty();
    if refused {
        return Err(SubmitError::Invalid(format!(
            "{field}: '{given}' is a path; a job names uploads by name or sha256:HEX, never a path \
             on the server"
        )));
    }
    // `sha256:HEX.wasm` is how a callback spec names an upload by hash.
    Ok(match given.strip_prefix("sha256:") {
        Some(rest) => format!("sha256:{}", rest.split('.').next().unwrap_or(rest)),
        None => given.to_string(),
    })
}

/// `requested` with every limit at most the ceiling: a limit left at its default is lowered to
/// the ceiling; one asked for above it is refused.
pub fn within_ceilings(requested: &Limits, ceilings: &Limits) -> Result<Limits, String> {
    let as_map = |limits: &Limits| match serde_json::to_value(limits) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    let (mut asked, ceiling, default) = (
        as_map(requested),
        as_map(ceilings),
        as_map(&Limits::default()),
    );
    for (key, value) in asked.iter_mut() {
        let (Some(v), Some(c)) = (value.as_f64(), ceiling.get(key).and_then(Value::as_f64)) else {
            continue;
        };
        if v <= c {
            continue;
        }
        if default.get(key) == Some(value) {
            *value = ceiling[key].clone();
        } else {
            return Err(format!(
                "{key} = {value} is above your ceiling of {}; ask the operator to raise it",
                ceiling[key]
            ));
        }
    }
    serde_json::from_value(Value::Object(asked)).map_err(|e| e.to_string())
}

/// Makes a resolved configuration runnable in `job_dir` (the job process's working directory):
/// each upload is linked there as `uploads/<name>` (a hard link to the stored bytes, or a copy
/// across file systems) and named by that relative path, so the run shows the tenant's names
/// and no path of the server.
pub fn localize(
    resolved: &mut TrainConfig,
    artifacts: &Artifacts,
    job_dir: &Path,
) -> std::io::Result<()> {
    let uploads = job_dir.join("uploads");
    std::fs::create_dir_all(&uploads)?;
    let link = |kind: UploadKind, resolved_name: &str| -> std::io::Result<String> {
        let (sha, name) = resolved_name
            .split_once('.')
            .unwrap_or((resolved_name, resolved_name));
        let target = uploads.join(name);
        if !target.exists() {
            let stored = artifacts.upload_path(kind, sha);
            if std::fs::hard_link(&stored, &target).is_err() {
                std::fs::copy(&stored, &target)?;
            }
        }
        Ok(format!("uploads/{name}"))
    };
    if let DataSpec::Csv { path, .. } = &mut resolved.data {
        *path = link(UploadKind::Dataset, &path.to_string_lossy())?.into();
    }
    for callback in &mut resolved.callbacks {
        if !bundled::names().any(|n| n == callback.spec.source) {
            callback.spec.source = link(UploadKind::Callback, &callback.spec.source)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_never_upload_names() {
        for given in [
            "/etc/passwd",
            "../x.csv",
            "a/b.csv",
            ".hidden",
            "x\\y.wasm",
            "",
        ] {
            assert!(upload_name(given, "data").is_err(), "{given}");
        }
        assert_eq!(upload_name("iris.csv", "data").unwrap(), "iris.csv");
        assert_eq!(upload_name("sha256:ab12.wasm", "c").unwrap(), "sha256:ab12");
    }

    #[test]
    fn limits_are_lowered_to_ceilings_or_refused_above_them() {
        let ceilings = Limits {
            fuel_per_call: 1_000,
            ..Limits::default()
        };
        let lowered = within_ceilings(&Limits::default(), &ceilings).unwrap();
        assert_eq!(lowered.fuel_per_call, 1_000);
        let asked = Limits {
            fuel_per_call: 5_000,
            ..Limits::default()
        };
        let err = within_ceilings(&asked, &ceilings).unwrap_err();
        assert!(
            err.contains("fuel_per_call = 5000") && err.contains("1000"),
            "{err}"
        );
        let below = Limits {
            fuel_per_call: 10,
            ..Limits::default()
        };
        assert_eq!(
            within_ceilings(&below, &ceilings).unwrap().fuel_per_call,
            10
        );
    }
}
