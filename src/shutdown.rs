//! Two-stage shutdown: first stop claiming new work, then, after a grace period, abort what runs.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Shared by every loop of the service. Cloning is cheap; all clones see the same signals.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    stop_claiming: CancellationToken,
    abort_work: CancellationToken,
}

impl Shutdown {
    /// A fresh, untriggered shutdown.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stage one: loops stop taking new work; running jobs go on.
    pub fn begin(&self) {
        self.stop_claiming.cancel();
    }

    /// Stage two: running jobs are abandoned (and their jobs released for another attempt).
    pub fn abort(&self) {
        self.stop_claiming.cancel();
        self.abort_work.cancel();
    }

    /// Resolves when stage one begins.
    pub async fn stopping(&self) {
        self.stop_claiming.cancelled().await
    }

    /// Resolves when stage two begins.
    pub async fn aborting(&self) {
        self.abort_work.cancelled().await
    }

    /// Whether stage one has begun.
    pub fn is_stopping(&self) -> bool {
        self.stop_claiming.is_cancelled()
    }

    /// Triggers stage one on SIGTERM or ctrl-c, and stage two `grace` later (or on a second signal).
    pub fn on_signals(&self, grace: Duration) {
        let this = self.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!(
                grace_seconds = grace.as_secs(),
                "shutdown requested: no new jobs are claimed"
            );
            this.begin();
            tokio::select! {
                _ = tokio::time::sleep(grace) => {}
                _ = wait_for_signal() => tracing::warn!("second signal: aborting running jobs now"),
            }
            this.abort();
        });
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term =
        signal(SignalKind::terminate()).expect("installing a SIGTERM handler cannot fail");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
