//! The `noop` kind: a diagnostic job that calls no API. It shows the queue working end to end
//! (`SELECT timelines.enqueue('noop', '{}')`) and is what the queue benchmark runs.

use std::time::Duration;

use super::{Handler, Job, Outcome};

/// Runs `noop` jobs: sleeps `sleep_ms` if given, fails with `fail` if given, else succeeds.
#[derive(Debug, Default, Clone)]
pub struct NoopHandler {
    workspaces: Option<Vec<String>>,
}

impl NoopHandler {
    /// A handler that claims jobs of `workspaces` only (fairly, when there are several).
    pub fn for_workspaces(workspaces: Vec<String>) -> Self {
        Self {
            workspaces: Some(workspaces),
        }
    }
}

impl Handler for NoopHandler {
    fn kinds(&self) -> Vec<String> {
        vec!["noop".to_owned()]
    }

    fn workspaces(&self) -> Option<Vec<String>> {
        self.workspaces.clone()
    }

    async fn handle(&self, job: Job) -> Outcome {
        if let Some(ms) = job.payload.get("sleep_ms").and_then(|v| v.as_u64()) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        match job.payload.get("fail").and_then(|v| v.as_str()) {
            Some(reason) => Outcome::fail(reason),
            None => Outcome::done(),
        }
    }
}
