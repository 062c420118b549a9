//! The run directory: where a run's configuration, logs, metrics and checkpoints live.
//!
//! Every whole-file write goes through [`atomic_write`] or [`atomic_write_all`] (temp file,
//! fsync, rename, fsync of the directory), so a crash at any point leaves either the old file or
//! the new one, never a torn one. Append-only logs (`*.jsonl`) are written a whole line at a time and flushed at fixed
//! points; a reader tolerates a torn last line.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

mod metrics_csv;
pub mod tensorboard;

pub use metrics_csv::MetricsCsv;
pub use tensorboard::TensorBoardWriter;

/// Errors reading or writing the run directory.
#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    /// An I/O operation on a path failed.
    #[error("{action} {path}: {source}{}", hint(source))]
    Io {
        /// What was being done, e.g. "cannot write".
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A JSON value could not be encoded or decoded.
    #[error("invalid JSON in {path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
}

/// What to do about the I/O errors a user can fix.
fn hint(source: &io::Error) -> &'static str {
    match source.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
            " (the disk is full: free some space, or choose a run directory elsewhere with --run-dir; \
             the last checkpoint written is intact and `--resume` continues from it)"
        }
        io::ErrorKind::ReadOnlyFilesystem | io::ErrorKind::PermissionDenied => {
            " (the run directory must be writable: choose another with --run-dir)"
        }
        _ => "",
    }
}

impl RunDirError {
    pub(crate) fn io(action: &'static str, path: &Path, source: io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Writes `bytes` to `path` atomically: readers and crashes see the old content or the new,
/// never a mix. The temp file lives beside the target so the rename stays on one filesystem.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), RunDirError> {
    atomic_write_all(&[(path, bytes)])
}

/// Writes several files atomically as one group: each goes to a temp file beside it and is
/// fsync'd, then all are renamed into place in the order given, then each directory involved is
/// fsync'd once. Every file is old or new after a crash, never torn, as with [`atomic_write`]
/// file by file; what the group saves is the directory sync per file, a journal commit that is a
/// good part of what writing a small file durably costs (an epoch's `best` and `last`
/// checkpoints, say). A file whose bytes equal an earlier one's in the same directory is not
/// written again: its temp is a hard link to that file's (falling back to a write where the
/// filesystem has no hard links), so an epoch's `best` and `last` of the same state cost one
/// file's data and fsync. Each name is still replaced by its own rename, so later writes to
/// either leave the other as it was. On error no temp file is left behind; files already renamed
/// stay, each whole.
pub fn atomic_write_all(files: &[(&Path, &[u8])]) -> Result<(), RunDirError> {
    // Unique per process and per write, so threads writing the same file never share a temp.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut temps: Vec<PathBuf> = Vec::with_capacity(files.len());
    let result = (|| {
        for (i, (path, bytes)) in files.iter().enumerate() {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = parent_dir(path);
            let tmp = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
            // That file is fsync'd, and the link is made durable by the directory sync. Never
            // for a path named earlier in the group: renaming a link over a name of the same
            // file does nothing and would leave the temp behind.
            let named_before = files[..i].iter().any(|(p, _)| p == path);
            let equal = |b: &[u8]| std::ptr::eq(b, *bytes) || b == *bytes;
            let same = files[..i]
                .iter()
                .position(|(p, b)| parent_dir(p) == dir && equal(b))
                .filter(|_| !named_before);
            if let Some(j) = same
                && fs::hard_link(&temps[j], &tmp).is_ok()
            {
                temps.push(tmp);
                continue;
            }
            let mut file =
                File::create(&tmp).map_err(|e| RunDirError::io("cannot create", &tmp, e))?;
            temps.push(tmp);
            let tmp = &temps[temps.len() - 1];
            file.write_all(bytes)
                .map_err(|e| RunDirError::io("cannot write", tmp, e))?;
            file.sync_all()
                .map_err(|e| RunDirError::io("cannot sync", tmp, e))?;
        }
        let mut dirs: Vec<&Path> = Vec::with_capacity(1);
        for ((path, _), tmp) in files.iter().zip(&temps) {
            fs::rename(tmp, path)
                .map_err(|e| RunDirError::io("cannot rename into place", path, e))?;
            let dir = parent_dir(path);
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        dirs.into_iter().try_for_each(sync_dir)
    })();
    if result.is_err() {
        // Never leave a partial temp file behind (those already renamed are gone); the error
        // we report is the original one.
        for tmp in &temps {
            let _ = fs::remove_file(tmp);
        }
    }
    result
}

/// The directory a file is in (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Serialises `value` as pretty JSON and writes it atomically.
pub fn atomic_write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), RunDirError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| RunDirError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    bytes.push(b'\n');
    atomic_write(path, &bytes)
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), RunDirError> {
    // Directories cannot be opened for sync on every platform; where they can, do it.
    #[cfg(unix)]
    {
        let d = File::open(dir).map_err(|e| RunDirError::io("cannot open directory", dir, e))?;
        d.sync_all()
            .map_err(|e| RunDirError::io("cannot sync directory", dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// A file written at its end through a buffer, with the flush and sync every run file needs.
#[derive(Debug)]
pub struct AppendFile {
    path: PathBuf,
    file: io::BufWriter<File>,
}

impl AppendFile {
    /// Opens `path` for appending, creating it if missing (or, with `new`, only creating it:
    /// an existing file is an error).
    pub fn open(path: &Path, new: bool) -> Result<Self, RunDirError> {
        let mut options = OpenOptions::new();
        options.append(true);
        if new {
            options.create_new(true);
        } else {
            options.create(true);
        }
        let file = options
            .open(path)
            .map_err(|e| RunDirError::io("cannot open", path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            file: io::BufWriter::new(file),
        })
    }

    /// Appends `bytes`. Buffered until [`AppendFile::flush`].
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), RunDirError> {
        self.file
            .write_all(bytes)
            .map_err(|e| RunDirError::io("cannot write", &self.path, e))
    }

    /// Hands what is buffered to the operating system (it survives the process being killed).
    pub fn flush(&mut self) -> Result<(), RunDirError> {
        self.file
            .flush()
            .map_err(|e| RunDirError::io("cannot write", &self.path, e))
    }

    /// Flushes and waits until the bytes are on disk (they survive a power cut).
    pub fn sync(&mut self) -> Result<(), RunDirError> {
        self.flush()?;
        self.file
            .get_ref()
            .sync_data()
            .map_err(|e| RunDirError::io("cannot sync", &self.path, e))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// An append-only JSON-lines file (`metrics.jsonl`, `events.jsonl`, `decisions.jsonl`).
#[derive(Debug)]
pub struct JsonLines {
    file: AppendFile,
    /// The line being encoded; kept for its capacity.
    line: Vec<u8>,
}

impl JsonLines {
    /// Opens `path` for appending, creating it if missing. A torn last line (a crash in the
    /// middle of a write) is cut off first, so new lines never glue onto it.
    pub fn open_append(path: &Path) -> Result<Self, RunDirError> {
        if let Ok(bytes) = fs::read(path)
            && !bytes.is_empty()
            && bytes.last() != Some(&b'\n')
        {
            let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| RunDirError::io("cannot open", path, e))?;
            f.set_len(keep as u64)
                .map_err(|e| RunDirError::io("cannot truncate", path, e))?;
        }
        Ok(Self {
            file: AppendFile::open(path, false)?,
            line: Vec::new(),
        })
    }

    /// Appends one value as a line. Buffered until [`JsonLines::flush`].
    pub fn append<T: serde::Serialize>(&mut self, value: &T) -> Result<(), RunDirError> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, value).map_err(|source| RunDirError::Json {
            path: self.file.path().to_path_buf(),
            source,
        })?;
        self.line.push(b'\n');
        self.file.write(&self.line)
    }

    /// Hands buffered lines to the operating system (they survive the process being killed).
    pub fn flush(&mut self) -> Result<(), RunDirError> {
        self.file.flush()
    }

    /// Flushes and waits until the lines are on disk (they survive a power cut).
    pub fn sync(&mut self) -> Result<(), RunDirError> {
        self.file.sync()
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }
}

/// Removes temp files left by writes that a crash interrupted (see [`atomic_write`]).
pub fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.contains(".tmp-") {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Reads a JSON-lines file, skipping a torn last line left by a crash.
pub fn read_json_lines<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>, RunDirError> {
    let text = fs::read_to_string(path).map_err(|e| RunDirError::io("cannot read", path, e))?;
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    complete
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).map_err(|source| RunDirError::Json {
                path: path.to_path_buf(),
                source,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.json");
        atomic_write(&path, b"old").unwrap();
        atomic_write(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("summary.json")]);
    }

    #[test]
    fn atomic_write_into_missing_directory_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("x.json");
        let err = atomic_write(&path, b"x").unwrap_err();
        assert!(err.to_string().contains("cannot create"), "{err}");
    }

    #[test]
    fn a_group_is_renamed_into_place_only_once_every_file_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.safetensors"), dir.path().join("a.json"));
        atomic_write_all(&[(&a, b"weights 1"), (&b, b"meta 1")]).unwrap();
        assert_eq!(fs::read(&a).unwrap(), b"weights 1");
        assert_eq!(fs::read(&b).unwrap(), b"meta 1");

        // The group's last file cannot be written: the first one is not replaced either.
        let unwritable = dir.path().join("missing").join("c.json");
        let err = atomic_write_all(&[(&a, b"weights 2"), (&unwritable, b"x")]).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        assert_eq!(fs::read(&a).unwrap(), b"weights 1");
        assert_eq!(
            sorted_names(dir.path()),
            ["a.json", "a.safetensors"],
            "no temp file is left"
        );
    }

    fn sorted_names(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[cfg(unix)]
    fn inode(path: &Path) -> (u64, u64) {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(path).unwrap();
        (m.ino(), m.nlink())
    }

    #[test]
    fn equal_files_in_a_group_are_written_once_and_stay_independent() {
        let dir = tempfile::tempdir().unwrap();
        let (best, last) = (dir.path().join("best"), dir.path().join("last"));
        atomic_write_all(&[(&best, b"epoch 3"), (&last, b"epoch 3")]).unwrap();
        assert_eq!(fs::read(&best).unwrap(), b"epoch 3");
        assert_eq!(fs::read(&last).unwrap(), b"epoch 3");
        #[cfg(unix)]
        {
            let (b, l) = (inode(&best), inode(&last));
            assert_eq!(b.0, l.0, "one file, two names");
            assert_eq!(b.1, 2);
        }
        // The next epoch replaces `last` only; `best` keeps its bytes.
        atomic_write_all(&[(&last, b"epoch 4")]).unwrap();
        assert_eq!(fs::read(&best).unwrap(), b"epoch 3");
        assert_eq!(fs::read(&last).unwrap(), b"epoch 4");
        #[cfg(unix)]
        assert_eq!(inode(&best).1, 1);
        assert_eq!(
            sorted_names(dir.path()),
            ["best", "last"],
            "no temp file is left"
        );
    }

    #[test]
    fn a_path_named_twice_in_a_group_ends_with_its_last_bytes_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        // `a` again with the bytes `b` has: a link would be renamed over its own name.
        atomic_write_all(&[(&a, b"x"), (&b, b"y"), (&a, b"y")]).unwrap();
        assert_eq!(fs::read(&a).unwrap(), b"y");
        assert_eq!(fs::read(&b).unwrap(), b"y");
        atomic_write_all(&[(&a, b"z"), (&b, b"z"), (&b, b"z")]).unwrap();
        assert_eq!(fs::read(&a).unwrap(), b"z");
        assert_eq!(fs::read(&b).unwrap(), b"z");
        assert_eq!(sorted_names(dir.path()), ["a", "b"], "no temp file is left");
    }

    #[test]
    fn appending_after_a_torn_line_cuts_it_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.jsonl");
        fs::write(&path, b"{\"epoch\":0}\n{\"epo").unwrap();
        let mut lines = JsonLines::open_append(&path).unwrap();
        lines.append(&serde_json::json!({"epoch": 1})).unwrap();
        lines.flush().unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "{\"epoch\":0}\n{\"epoch\":1}\n"
        );
    }

    #[test]
    fn json_lines_skip_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.jsonl");
        let mut lines = JsonLines::open_append(&path).unwrap();
        lines.append(&serde_json::json!({"epoch": 0})).unwrap();
        lines.append(&serde_json::json!({"epoch": 1})).unwrap();
        lines.flush().unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"epoch\": 2").unwrap();
        let read: Vec<serde_json::Value> = read_json_lines(&path).unwrap();
        assert_eq!(read.len(), 2);
    }
}
