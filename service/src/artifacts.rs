//! Where the service keeps files: uploaded callbacks and datasets, content-addressed, and each
//! job's directory (its run directory, the job process's plan and its stderr).
//!
//! ```text
//! <root>/callbacks/<sha256>.wasm    <root>/datasets/<sha256>.csv
//! <root>/jobs/<job-id>/plan.json    <root>/jobs/<job-id>/run/…    <root>/jobs/<job-id>/stderr.log
//! <root>/cache/                     compiled components, shared by every job process
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::auth::hex;
use crate::model::UploadKind;

/// The artifact directory.
#[derive(Debug, Clone)]
pub struct Artifacts {
    root: PathBuf,
}

impl Artifacts {
    /// Opens `root`, creating its folders.
    pub fn open(root: &Path) -> std::io::Result<Self> {
        for dir in ["callbacks", "datasets", "jobs", "cache"] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// Stores `bytes` under their SHA-256 (once: the same bytes again change nothing), written
    /// to a temporary file, synced and renamed, so a crash never leaves half an upload. Returns
    /// the hash.
    pub fn put(&self, kind: UploadKind, bytes: &[u8]) -> std::io::Result<String> {
        let sha = hex(&Sha256::digest(bytes));
        let path = self.upload_path(kind, &sha);
        if !path.exists() {
            let dir = self.root.join(kind.as_str());
            let mut tmp = tempfile_in(&dir)?;
            tmp.1.write_all(bytes)?;
            tmp.1.sync_all()?;
            std::fs::rename(&tmp.0, &path)?;
            std::fs::File::open(&dir)?.sync_all()?;
        }
        Ok(sha)
    }

    /// The file of an upload.
    pub fn upload_path(&self, kind: UploadKind, sha256: &str) -> PathBuf {
        let ext = match kind {
            UploadKind::Callback => "wasm",
            UploadKind::Dataset => "csv",
        };
        self.root
            .join(kind.as_str())
            .join(format!("{sha256}.{ext}"))
    }

    /// A job's directory.
    pub fn job_dir(&self, job: &str) -> PathBuf {
        self.root.join("jobs").join(job)
    }

    /// A job's run directory (what `trainrt run --run-dir` would be).
    pub fn run_dir(&self, job: &str) -> PathBuf {
        self.job_dir(job).join("run")
    }

    /// The compiled-component cache the job processes share.
    pub fn component_cache(&self) -> PathBuf {
        self.root.join("cache")
    }
}

/// A new file in `dir` with a unique name, for writing then renaming.
fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    for n in 0u32.. {
        let path = dir.join(format!(".upload-{}-{n}.tmp", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    unreachable!("u32 names run out before a directory does")
}

/// Bytes of every file under `path` (0 if it does not exist).
pub fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&entry.path()),
            Ok(_) => entry.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_are_content_addressed_and_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let artifacts = Artifacts::open(dir.path()).unwrap();
        let a = artifacts
            .put(UploadKind::Dataset, b"x,label\n1,0\n")
            .unwrap();
        let b = artifacts
            .put(UploadKind::Dataset, b"x,label\n1,0\n")
            .unwrap();
        assert_eq!(a, b);
        let path = artifacts.upload_path(UploadKind::Dataset, &a);
        assert_eq!(std::fs::read(&path).unwrap(), b"x,label\n1,0\n");
        assert_eq!(dir_bytes(&dir.path().join("datasets")), 12);
    }
}
