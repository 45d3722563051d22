//! Fault injection: 5xx answers without side effect, HTTP 200 with `status:"error"` (§2.1), and
//! connections dropped after the side effect happened.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::reply::{ApiError, gateway_page};

/// Faults the simulator injects; change them at runtime with `Simulator::set_faults` or
/// `PUT /_sim/faults`. All rates are fractions in `[0, 1]`; the default injects nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Fraction of authenticated, not rate-limited requests answered 5xx before the handler
    /// runs, so with no side effect. Bodies mix a JSON 500 envelope with 502/503/504 HTML
    /// gateway pages (§8.1). They use no API-call quota.
    pub error_rate: f64,
    /// Added to every answer of the API paths (after the handler ran).
    pub latency: Duration,
    /// Fraction of mutating requests (POST, PUT, PATCH, DELETE) that succeed and whose
    /// connection is then closed before any byte of the answer is sent: the side effect
    /// happened, the client sees a transport error.
    pub drop_after_side_effect_rate: f64,
    /// Fraction of requests answered HTTP 200 with `{"status":"error",…}` and no side effect,
    /// as third parties report seeing live (§2.1, §8.1).
    pub status_error_rate: f64,
}

/// `Faults` over HTTP (`PUT /_sim/faults`): latency in milliseconds, absent fields are 0.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultsJson {
    /// See [`Faults::error_rate`].
    pub error_rate: f64,
    /// See [`Faults::latency`], in milliseconds.
    pub latency_ms: u64,
    /// See [`Faults::drop_after_side_effect_rate`].
    pub drop_after_side_effect_rate: f64,
    /// See [`Faults::status_error_rate`].
    pub status_error_rate: f64,
}

impl FaultsJson {
    /// Converts to [`Faults`], refusing rates outside `[0, 1]`.
    pub fn into_faults(self) -> Result<Faults, String> {
        for (name, rate) in [
            ("error_rate", self.error_rate),
            (
                "drop_after_side_effect_rate",
                self.drop_after_side_effect_rate,
            ),
            ("status_error_rate", self.status_error_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be within [0, 1], got {rate}"));
            }
        }
        Ok(Faults {
            error_rate: self.error_rate,
            latency: Duration::from_millis(self.latency_ms),
            drop_after_side_effect_rate: self.drop_after_side_effect_rate,
            status_error_rate: self.status_error_rate,
        })
    }

    /// The HTTP form of `faults`.
    pub fn from_faults(faults: &Faults) -> Self {
        Self {
            error_rate: faults.error_rate,
            latency_ms: faults.latency.as_millis() as u64,
            drop_after_side_effect_rate: faults.drop_after_side_effect_rate,
            status_error_rate: faults.status_error_rate,
        }
    }
}

/// Response extension: the connection of this answer is dropped.
#[derive(Clone, Copy)]
pub(crate) struct Dropped;

/// Response extension: this answer is an injected fault.
#[derive(Clone, Copy)]
pub(crate) struct Injected;

/// True with probability `p` (clamped to `[0, 1]`).
pub(crate) fn roll(p: f64) -> bool {
    p > 0.0 && rand::rng().random_bool(p.min(1.0))
}

/// A fault to answer instead of running the handler, if one is rolled.
pub(crate) fn inject_before(faults: &Faults) -> Option<Response> {
    if roll(faults.error_rate) {
        return Some(server_error());
    }
    if roll(faults.status_error_rate) {
        let body = json!({
            "status": "error",
            "message": "Internal error, please try again later",
            "error_code": "internal_error",
        });
        return Some((StatusCode::OK, axum::Json(body)).into_response());
    }
    None
}

/// One of: a JSON 500 envelope, or a 502/503/504 HTML gateway page.
fn server_error() -> Response {
    match rand::rng().random_range(0..4) {
        0 => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Internal server error",
        )
        .into_response(),
        1 => gateway_page(StatusCode::BAD_GATEWAY),
        2 => gateway_page(StatusCode::SERVICE_UNAVAILABLE),
        _ => gateway_page(StatusCode::GATEWAY_TIMEOUT),
    }
}

/// Replaces the body of `response` with one that fails on its first poll. Hyper encodes the
/// head into its write buffer and polls the body in the same turn; the body error aborts the
/// connection before the buffer is flushed, so the client gets no status line at all (checked
/// by `drop_after_side_effect_gives_the_client_an_error_but_keeps_the_message`).
pub(crate) fn drop_connection(response: Response) -> Response {
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.extensions.insert(Dropped);
    let failing = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("simulated connection drop"))
    });
    Response::from_parts(parts, Body::from_stream(failing))
}
