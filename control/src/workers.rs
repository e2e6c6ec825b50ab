//! The control plane's side of each worker thread: its link, its
//! counters, how to wake it, and how it ended. The daemon starts and
//! supervises workers through these; the operator's requests (`ops`) ask
//! them for status. Neither needs the other to name a worker.

use std::sync::Arc;
use std::thread::JoinHandle;

use xstack_dataplane::channel::{ToWorker, WorkerLink};
use xstack_dataplane::introspect::Snapshot;
use xstack_dataplane::stats::WorkerStats;
use xstack_dataplane::worker::WorkerReport;

/// The control plane's hold on one worker thread.
pub(crate) struct WorkerHandle {
    pub queue: u32,
    pub link: WorkerLink,
    pub stats: Arc<WorkerStats>,
    /// Ends the worker's adaptive sleep (after a command is queued).
    pub wake: Box<dyn Fn() + Send + Sync>,
    /// The worker's last answer to a status request (kept after it dies).
    pub last: Option<Box<Snapshot>>,
    pub thread: Option<JoinHandle<std::thread::Result<WorkerReport>>>,
    pub report: Option<WorkerReport>,
    pub died: Option<String>,
    /// Neighbour updates its inbox had no room for, oldest first: sent
    /// before anything newer, never dropped (a lost update could leave a
    /// next hop unreachable until its entry expires).
    pub backlog: std::collections::VecDeque<ToWorker>,
}

/// Joins a finished worker: its final report, or why it died.
pub(crate) fn collect(w: &mut WorkerHandle) {
    let Some(t) = w.thread.take() else { return };
    match t.join() {
        Ok(Ok(report)) => w.report = Some(report),
        Ok(Err(panic)) | Err(panic) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panicked".into());
            w.died = Some(why);
        }
    }
}
