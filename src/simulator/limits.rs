//! The gate every API route passes: bearer auth (§1, §8.1), the sliding-window rate limit
//! (§8.2), injected faults, and the monthly API-call quota (§8.3); plus the outer observer that
//! adds latency and counts answers.
//!
//! Order, and why:
//! 1. **Auth.** Unauthenticated requests are not "requests of the workspace": they enter no
//!    window and use no quota.
//! 2. **Rate limit.** Refused requests have no side effect and do *not* count against the
//!    API-call quota: the docs place the limit in front of the API (per IP, §8.2), and the quota
//!    counts calls the API served (§8.3).
//! 3. **Injected 5xx / 200-with-error faults.** No side effect, no quota use (the request "never
//!    reached" the application).
//! 4. **API-call quota.** Every remaining authenticated request counts, whatever its answer
//!    (validation errors and 404s included). When used up: 403 `api_calls_quota_exceeded`
//!    (§8.3 leaves the answer open, *INFERRED* 403), not counted.
//! 5. The handler, then perhaps the injected connection drop (mutating requests that succeeded).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::faults::{self, Dropped, Injected};
use super::reply::ApiError;
use super::state::Shared;

/// A sliding-window limiter: at most `limit` accepted requests in any `window` (not fixed
/// buckets, so no double burst at a bucket edge).
pub(crate) struct SlidingWindow {
    limit: usize,
    window: Duration,
    accepted: VecDeque<Instant>,
    max_in_window: usize,
}

impl SlidingWindow {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit: limit as usize,
            window,
            accepted: VecDeque::new(),
            max_in_window: 0,
        }
    }

    /// Accepts a request at `now`, or returns how long until the oldest accepted request leaves
    /// the window.
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), Duration> {
        while let Some(&oldest) = self.accepted.front() {
            if now.duration_since(oldest) >= self.window {
                self.accepted.pop_front();
            } else {
                break;
            }
        }
        if self.accepted.len() >= self.limit {
            let wait = match self.accepted.front() {
                Some(&oldest) => (oldest + self.window).saturating_duration_since(now),
                None => self.window,
            };
            return Err(wait);
        }
        self.accepted.push_back(now);
        // After pruning, the deque holds exactly the requests accepted in (now - window, now].
        // The busiest window always ends at an accepted request, so the running maximum of this
        // count is the exact maximum over all windows.
        self.max_in_window = self.max_in_window.max(self.accepted.len());
        Ok(())
    }

    /// The most requests accepted in any window of `window` length so far.
    pub fn max_in_window(&self) -> usize {
        self.max_in_window
    }
}

/// `Retry-After` seconds: the wait rounded up, at least 1.
fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// Middleware on every API route (see the module docs for the order).
pub(crate) async fn gate(State(sim): State<Shared>, req: Request, next: Next) -> Response {
    if let Err(failure) = authenticate(&sim.config.tokens, req.headers()) {
        return failure.into_response();
    }
    let faults = {
        let mut world = sim.world();
        if let Err(wait) = world.window.try_acquire(Instant::now()) {
            world.counters.rate_limited += 1;
            return throttled(sim.config.throttle_as_403, wait);
        }
        world.faults.clone()
    };
    if let Some(mut injected) = faults::inject_before(&faults) {
        injected.extensions_mut().insert(Injected);
        return injected;
    }
    {
        let mut world = sim.world();
        if world.api_calls_used >= sim.config.monthly_api_calls {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "api_calls_quota_exceeded",
                "API calls quota exceeded for the current period",
            )
            .into_response();
        }
        world.api_calls_used += 1;
    }
    let mutating = matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    let response = next.run(req).await;
    if mutating
        && response.status().is_success()
        && faults::roll(faults.drop_after_side_effect_rate)
    {
        return faults::drop_connection(response);
    }
    response
}

/// Why a request was not authenticated. The three variants carry the three 401 bodies the
/// reference records (§8.1).
enum AuthFailure {
    /// No `Authorization` header: `missing_credentials`.
    Missing,
    /// A header that is not a bearer token: the plain-text `Unauthorized` an older source saw.
    Malformed,
    /// A bearer token the workspace does not know: `invalid_token`.
    Unknown,
}

impl IntoResponse for AuthFailure {
    fn into_response(self) -> Response {
        match self {
            Self::Missing => unauthorized("missing_credentials"),
            Self::Malformed => (
                StatusCode::UNAUTHORIZED,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "Unauthorized",
            )
                .into_response(),
            Self::Unknown => unauthorized("invalid_token"),
        }
    }
}

/// Checks `Authorization: Bearer <token>` (scheme case-insensitive) against `tokens`.
fn authenticate(tokens: &[String], headers: &HeaderMap) -> Result<(), AuthFailure> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(AuthFailure::Missing)?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
        .ok_or(AuthFailure::Malformed)?;
    if tokens.iter().any(|t| t == token) {
        Ok(())
    } else {
        Err(AuthFailure::Unknown)
    }
}

/// The JSON 401 with the official message "Invalid or expired token".
fn unauthorized(code: &'static str) -> Response {
    ApiError::new(StatusCode::UNAUTHORIZED, code, "Invalid or expired token").into_response()
}

/// The rate-limit refusal: 429 with an envelope and a fake-only `Retry-After` (§8.2), or the
/// 403 some workspaces see when throttled (§8.1, L: S6), which carries no `Retry-After`.
fn throttled(as_403: bool, wait: Duration) -> Response {
    if as_403 {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "throttled",
            "Access denied: too many requests (throttled)",
        )
        .into_response()
    } else {
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "Too many requests",
        );
        error.retry_after_secs = Some(retry_after_secs(wait));
        error.into_response()
    }
}

/// Outermost middleware of everything except `/_sim/…`: adds the configured latency to every
/// answer (after the handler ran, so a client that times out may still have caused the side
/// effect) and counts the answer.
pub(crate) async fn observe(State(sim): State<Shared>, req: Request, next: Next) -> Response {
    if req.uri().path().starts_with("/_sim/") {
        return next.run(req).await;
    }
    let response = next.run(req).await;
    let latency = sim.world().faults.latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut world = sim.world();
    let counters = &mut world.counters;
    counters.requests_total += 1;
    if response.extensions().get::<Dropped>().is_some() {
        counters.connections_dropped += 1;
    } else {
        *counters
            .by_status
            .entry(response.status().as_u16())
            .or_default() += 1;
    }
    if response.extensions().get::<Injected>().is_some() {
        counters.faults_injected += 1;
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_refuses_the_request_over_the_limit_until_the_oldest_leaves() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut w = SlidingWindow::new(3, ms(1000));
        assert!(w.try_acquire(t0).is_ok());
        assert!(w.try_acquire(t0 + ms(100)).is_ok());
        assert!(w.try_acquire(t0 + ms(200)).is_ok());
        assert_eq!(w.try_acquire(t0 + ms(300)), Err(ms(700)));
        assert!(w.try_acquire(t0 + ms(1000)).is_ok());
        assert_eq!(w.try_acquire(t0 + ms(1050)), Err(ms(50)));
        assert_eq!(w.max_in_window(), 3);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(60)), 60);
    }
}
