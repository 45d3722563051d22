//! Per-process metrics, recorded where things happen (the worker, the API client's observer, the
//! limiter) through the `metrics` facade into one Prometheus recorder per process. Recording is
//! an in-memory increment: no I/O, no lock held across an await. Before [`install`] (one-shot
//! commands such as `poll`) every call is a no-op.
//!
//! The names (README, "Health, metrics and logs", documents each):
//! - [`DISPATCH_SECONDS`]: histogram {workspace, kind, outcome};
//! - [`API_REQUESTS`]: counter {workspace, endpoint, status_class};
//! - [`API_THROTTLED`]: counter {workspace};
//! - [`LIMITER_WAIT_SECONDS`]: histogram {workspace};
//! - [`LIMITER_DEFERRED`]: counter {workspace}.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_histogram, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::shutdown::Shutdown;
use crate::timelines::ErrorClass;

/// One attempt of a job, from its start right after this worker claimed it to the handler's
/// outcome (rate-limit waits and API calls included; the outcome's write is not).
pub const DISPATCH_SECONDS: &str = "timelines_sync_dispatch_duration_seconds";
/// TimelinesAI API requests that reached the network, by answer.
pub const API_REQUESTS: &str = "timelines_sync_api_requests_total";
/// Answers that throttled the workspace: 429, or a 403 that says it is throttling.
pub const API_THROTTLED: &str = "timelines_sync_api_throttled_total";
/// Time a request waited for its rate-limit slot (this process's turn, then the shared slot).
pub const LIMITER_WAIT_SECONDS: &str = "timelines_sync_rate_limiter_wait_seconds";
/// Requests whose slot was more than 30 s away: their job stepped aside (snoozed).
pub const LIMITER_DEFERRED: &str = "timelines_sync_rate_limiter_deferred_total";

const DISPATCH_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
const LIMITER_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
];

/// How often histogram samples are folded into their buckets between scrapes (memory stays flat
/// when nobody scrapes).
const UPKEEP_EVERY: Duration = Duration::from_secs(10);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's recorder (once; later calls return the same handle). When another
/// recorder was installed first (an embedding program's), metrics go there and this handle
/// renders nothing of the process's own.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(DISPATCH_SECONDS.into()), DISPATCH_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full(LIMITER_WAIT_SECONDS.into()),
                    LIMITER_BUCKETS,
                )
            })
            .expect("the bucket lists are not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics shows only the database's figures");
        }
        describe();
        handle
    })
}

fn describe() {
    describe_histogram!(
        DISPATCH_SECONDS,
        metrics::Unit::Seconds,
        "One job attempt, from its claim to the handler's outcome"
    );
    describe_counter!(API_REQUESTS, "TimelinesAI API requests by answer");
    describe_counter!(
        API_THROTTLED,
        "API answers that throttled the workspace (429, or a throttling 403)"
    );
    describe_histogram!(
        LIMITER_WAIT_SECONDS,
        metrics::Unit::Seconds,
        "Wait for a rate-limit slot before a request"
    );
    describe_counter!(
        LIMITER_DEFERRED,
        "Requests whose slot was over 30 s away: the job was snoozed"
    );
}

/// Folds histogram samples into buckets every [`UPKEEP_EVERY`] until `shutdown` begins.
pub async fn upkeep(shutdown: Shutdown) {
    let handle = install();
    loop {
        tokio::select! {
            _ = shutdown.stopping() => return,
            _ = tokio::time::sleep(UPKEEP_EVERY) => handle.run_upkeep(),
        }
    }
}

/// Shows a configured workspace's counters at zero before anything happened (a rate of a series
/// that appears only with its first increment misses that increment).
pub fn workspace_configured(workspace: &str) {
    let ws = workspace.to_owned();
    counter!(API_THROTTLED, "workspace" => ws.clone()).increment(0);
    counter!(LIMITER_DEFERRED, "workspace" => ws).increment(0);
}

/// A job attempt ended with `outcome` (`done`, `retry`, `uncertain`, `hold`, `snooze`, `fail`)
/// after `elapsed`.
pub fn attempt_finished(workspace: &str, kind: &str, outcome: &'static str, elapsed: Duration) {
    histogram!(DISPATCH_SECONDS, "workspace" => workspace.to_owned(), "kind" => kind.to_owned(),
        "outcome" => outcome)
    .record(elapsed.as_secs_f64());
}

/// An API request reached the network and ended with `status` (or none: a transport error).
pub fn api_request(
    workspace: &str,
    method: &str,
    path: &str,
    status: Option<u16>,
    class: Option<ErrorClass>,
) {
    let ws = workspace.to_owned();
    counter!(API_REQUESTS, "workspace" => ws.clone(), "endpoint" => endpoint(method, path),
        "status_class" => status_class(status))
    .increment(1);
    if class == Some(ErrorClass::RateLimited) && status.is_some() {
        counter!(API_THROTTLED, "workspace" => ws).increment(1);
    }
}

/// A request waited `waited` for its slot; `deferred` when the slot was too far away and the
/// job stepped aside instead.
pub fn limiter_waited(workspace: &str, waited: Duration, deferred: bool) {
    if deferred {
        counter!(LIMITER_DEFERRED, "workspace" => workspace.to_owned()).increment(1);
    } else {
        histogram!(LIMITER_WAIT_SECONDS, "workspace" => workspace.to_owned())
            .record(waited.as_secs_f64());
    }
}

/// `2xx`, `3xx`, `4xx`, `5xx`, or `transport_error` when no answer arrived.
pub fn status_class(status: Option<u16>) -> &'static str {
    match status {
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        Some(_) => "other",
        None => "transport_error",
    }
}

/// The endpoint a request path belongs to, its ids replaced so the label stays small:
/// `POST /chats/:id/messages`, `GET /messages/:id/status_history` (`:id` rather than `{id}`:
/// some text-format parsers end the label set at the first `}`).
pub fn endpoint(method: &str, path: &str) -> String {
    // The second segment of these collections is an id, except for the fixed sub-resources.
    const COLLECTIONS: &[&str] = &["chats", "messages", "files", "webhooks"];
    const FIXED: &[&str] = &["to_jid", "to_chat_name"];
    let mut out = String::with_capacity(method.len() + path.len() + 4);
    out.push_str(method);
    out.push(' ');
    let mut segments = path.trim_start_matches('/').split('/');
    let first = segments.next().unwrap_or_default();
    out.push('/');
    out.push_str(first);
    for (i, segment) in segments.enumerate() {
        out.push('/');
        let is_id = i == 0 && COLLECTIONS.contains(&first) && !FIXED.contains(&segment);
        out.push_str(if is_id { ":id" } else { segment });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_replace_ids_but_keep_fixed_paths() {
        assert_eq!(
            endpoint("POST", "/chats/42/messages"),
            "POST /chats/:id/messages"
        );
        assert_eq!(
            endpoint("GET", "/messages/ab-12/status_history"),
            "GET /messages/:id/status_history"
        );
        assert_eq!(
            endpoint("POST", "/messages/to_jid"),
            "POST /messages/to_jid"
        );
        assert_eq!(
            endpoint("GET", "/workspace/quotas"),
            "GET /workspace/quotas"
        );
        assert_eq!(endpoint("POST", "/messages"), "POST /messages");
    }

    #[test]
    fn status_classes() {
        assert_eq!(status_class(Some(201)), "2xx");
        assert_eq!(status_class(Some(429)), "4xx");
        assert_eq!(status_class(Some(503)), "5xx");
        assert_eq!(status_class(None), "transport_error");
    }
}
