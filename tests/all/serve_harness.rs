//! Running `trainrt serve` for tests and benchmarks: the real binary on a free port with its own
//! data directory, and `trainrt admin` against it.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test (or benchmark)

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use crate::common::trainrt_command;

/// A running `trainrt serve`, killed when dropped.
pub struct Server {
    /// The server process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its data directory.
    pub data: PathBuf,
}

impl Server {
    /// Starts a server on `data` with `workers` job slots, rate-limited far above what a test
    /// sends.
    pub fn start(data: &Path, workers: usize) -> Self {
        Self::start_with(data, workers, &["--rate-limit", "100000"])
    }

    /// Starts a server with more `trainrt serve` flags.
    pub fn start_with(data: &Path, workers: usize, flags: &[&str]) -> Self {
        let mut child = trainrt_command()
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--workers",
                &workers.to_string(),
            ])
            .args(flags)
            .arg("--data-dir")
            .arg(data)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("trainrt serve starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .to_string();
        Self {
            child,
            url,
            data: data.to_path_buf(),
        }
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `trainrt admin ARGS` on the data dir; returns the last word printed (a token).
pub fn admin(data: &Path, args: &[&str]) -> String {
    let out = trainrt_command()
        .arg("admin")
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .last()
        .unwrap()
        .to_string()
}
