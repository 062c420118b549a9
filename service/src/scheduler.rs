//! Job slots: claims jobs from the store while a slot is free (the store's claim is what makes
//! it fair across tenants and keeps each within its running-jobs quota), runs each with the
//! [`JobRunner`], and on shutdown suspends them all and waits for them.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::executor::JobRunner;

/// How often an idle scheduler looks for work it was not told about (jobs requeued elsewhere).
const POLL: Duration = Duration::from_millis(500);

/// Runs up to `slots` jobs at once until `shutdown` turns true; then suspends the running ones
/// (each back to the queue at its next epoch boundary) and returns when all have ended.
pub async fn run(
    runner: Arc<JobRunner>,
    slots: usize,
    wake: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
) {
    let mut running = JoinSet::new();
    let mut stop = shutdown.clone();
    loop {
        if *stop.borrow() {
            break;
        }
        while running.len() < slots {
            match runner.store.claim(&runner.worker).await {
                Ok(Some(claim)) => {
                    runner.events.send_modify(|n| *n += 1);
                    let runner = Arc::clone(&runner);
                    let shutdown = shutdown.clone();
                    running.spawn(async move { runner.run(claim, shutdown).await });
                }
                Ok(None) => break,
                Err(e) => {
                    eprintln!("trainrt serve: cannot claim a job: {e}");
                    break;
                }
            }
        }
        tokio::select! {
            _ = wake.notified() => {}
            Some(_) = running.join_next(), if !running.is_empty() => {}
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.changed() => {}
        }
    }
    while running.join_next().await.is_some() {}
}
