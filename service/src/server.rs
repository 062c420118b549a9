//! `trainrt serve`: opens the store and artifacts, puts back in the queue the jobs a previous
//! server was running (they resume from their checkpoints), starts the job slots and the HTTP
//! API, and on SIGTERM or Ctrl-C stops taking work, suspends running jobs at their next epoch
//! boundary (each writes its checkpoint and goes back to the queue) and exits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{Notify, watch};
use trainrt::Sandbox;
use trainrt::sandbox::{Compiler, ComponentCache};

use crate::api::{ApiLimits, ApiState, router};
use crate::artifacts::Artifacts;
use crate::executor::JobRunner;
use crate::store::Store;
use crate::store::sqlite::SqliteStore;

/// How `trainrt serve` runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where the database and artifacts live.
    pub data_dir: PathBuf,
    /// Where the API listens.
    pub listen: SocketAddr,
    /// Jobs run at once (0: serve the API only).
    pub workers: usize,
    /// The `trainrt` binary that runs job processes and compiles components.
    pub exe: PathBuf,
    /// Limits of the HTTP layer.
    pub api: ApiLimits,
}

impl ServeConfig {
    /// `data_dir` on 127.0.0.1:8700 with two job slots, running job processes with this very
    /// binary, with the default API limits.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            listen: SocketAddr::from(([127, 0, 0, 1], 8700)),
            workers: 2,
            exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("trainrt")),
            api: ApiLimits::default(),
        }
    }
}

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The data directory could not be prepared.
    #[error("cannot use the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The job store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The sandbox could not start.
    #[error(transparent)]
    Sandbox(#[from] trainrt::sandbox::SandboxError),
    /// The address could not be listened on.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// The database file in a data directory.
pub fn database_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("trainrt.db")
}

/// Opens the store of a data directory, creating both when they do not exist.
pub async fn open_store(data_dir: &std::path::Path) -> Result<Arc<dyn Store>, ServeError> {
    std::fs::create_dir_all(data_dir).map_err(|source| ServeError::DataDir {
        path: data_dir.to_path_buf(),
        source,
    })?;
    Ok(Arc::new(SqliteStore::open(&database_path(data_dir)).await?))
}

/// Runs the service until SIGTERM or Ctrl-C.
pub async fn serve(mut config: ServeConfig) -> Result<(), ServeError> {
    let store = open_store(&config.data_dir).await?;
    // Job processes run in their job directories: every path handed to them is absolute.
    config.data_dir =
        std::path::absolute(&config.data_dir).map_err(|source| ServeError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
    let artifacts_dir = config.data_dir.join("artifacts");
    let artifacts = Artifacts::open(&artifacts_dir).map_err(|source| ServeError::DataDir {
        path: artifacts_dir.clone(),
        source,
    })?;
    // One server per data directory: whatever the last one was running, it is not now.
    let worker = "local".to_string();
    let requeued = store
        .requeue_lost(
            &worker,
            "the server restarted; the job resumes from its last checkpoint",
        )
        .await?;
    if !requeued.is_empty() {
        eprintln!(
            "trainrt serve: {} job(s) the last server was running go back to the queue",
            requeued.len()
        );
    }
    let sandbox = Sandbox::with_cache(ComponentCache::at(None))?
        .with_compiler(Compiler::process(config.exe.clone()));
    let (events_tx, events_rx) = watch::channel(0u64);
    let wake = Arc::new(Notify::new());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let runner = Arc::new(JobRunner {
        store: Arc::clone(&store),
        artifacts: artifacts.clone(),
        exe: config.exe.clone(),
        worker,
        events: events_tx,
    });
    let state = Arc::new(ApiState::new(
        Arc::clone(&store),
        artifacts,
        Arc::new(sandbox),
        Arc::clone(&wake),
        events_rx,
        config.api.clone(),
    ));
    let (app, _) = router(state);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(config.listen);
    // Tests and scripts read this line to find a port chosen with :0.
    println!(
        "trainrt serve: listening on http://{addr} ({} job slot(s), data in {})",
        config.workers,
        config.data_dir.display()
    );
    let scheduler = tokio::spawn(crate::scheduler::run(
        runner,
        config.workers,
        wake,
        shutdown_rx.clone(),
    ));
    let mut http_shutdown = shutdown_rx.clone();
    let http = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = http_shutdown.wait_for(|s| *s).await;
            })
            .await
    });
    shutdown_signal().await;
    eprintln!(
        "trainrt serve: shutting down: running jobs checkpoint at their next epoch boundary and go back to the queue"
    );
    let _ = shutdown_tx.send(true);
    let _ = scheduler.await;
    // Live event streams of jobs that went back to the queue would hold the listener open.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), http).await;
    Ok(())
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
