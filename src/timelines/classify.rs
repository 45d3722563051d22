//! The classification of responses (reference §8): a pure function of the request kind, the
//! HTTP status, the headers and the parsed body, plus `Retry-After` parsing.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};

use super::envelope::ParsedBody;
use super::error::ErrorClass;

/// Words in a message or code that mean "slow down". Checked first: "rate limit exceeded" must
/// not read as a quota.
const THROTTLE_WORDS: &[&str] = &[
    "too many requests",
    "too_many_requests",
    "rate limit",
    "rate_limit",
    "ratelimit",
    "rate-limit",
    "throttl",
];
/// Words that name a renewing quota (§8.1: `quota_exceeded`, "mass sending quota").
const QUOTA_WORDS: &[&str] = &["quota", "mass sending", "credits"];
/// A "limit" is a quota only when it is tied to the billing period or the API-call allowance;
/// plan limits ("10 webhooks per workspace", seats) do not renew and stay InvalidRequest.
const PERIOD_WORDS: &[&str] = &["monthly", "per month", "period", "api call", "api_call"];
/// `error_code`s and messages of a bad token (reference §8.1 and the Deno client).
const AUTH_WORDS: &[&str] = &[
    "invalid_token",
    "missing_credentials",
    "invalid or expired token",
    "unauthorized",
    "unauthenticated",
];
/// Words of a server-side fault reported in a 200 envelope ("Internal error, please try again
/// later").
const FAULT_WORDS: &[&str] = &[
    "internal error",
    "internal_error",
    "server error",
    "try again",
    "temporarily",
    "unavailable",
    "timed out",
    "timeout",
];

/// What an error body's code and message suggest, independent of the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hint {
    Throttled,
    Quota,
    Auth,
    NotFound,
    Fault,
}

fn hint(body: &ParsedBody) -> Option<Hint> {
    let ParsedBody::Error(e) = body else {
        return None;
    };
    let text = format!(
        "{} {}",
        e.error_code.as_deref().unwrap_or(""),
        e.message.as_deref().unwrap_or("")
    )
    .to_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| text.contains(w));
    if has(THROTTLE_WORDS) {
        Some(Hint::Throttled)
    } else if has(QUOTA_WORDS) || (text.contains("limit") && has(PERIOD_WORDS)) {
        Some(Hint::Quota)
    } else if has(AUTH_WORDS) {
        Some(Hint::Auth)
    } else if text.contains("not_found") || text.contains("not found") {
        Some(Hint::NotFound)
    } else if has(FAULT_WORDS) {
        Some(Hint::Fault)
    } else {
        None
    }
}

/// Classifies a response; `None` means success. `read_only` is true for GET: a request that
/// cannot have changed anything, so it is never [`ErrorClass::Ambiguous`].
///
/// Rules where the reference (§8.1) leaves room:
/// - 2xx with a body that is not JSON: InvalidRequest on a GET (a wrong base URL), Ambiguous
///   otherwise.
/// - 2xx with `status:"error"`: by the message (throttle words → RateLimited, quota words →
///   QuotaExhausted, token codes → Auth, `not_found` → NotFound, "internal error"/"try again"
///   → Transient, like the 5xx it stands for), else InvalidRequest.
/// - 429: RateLimited, unless the body names a quota (and not a rate) → QuotaExhausted.
/// - 403: throttle words or a `Retry-After` header → RateLimited; quota words →
///   QuotaExhausted; a JSON envelope otherwise → InvalidRequest ("access denied" concerns this
///   resource or feature, not the token, so it must not stop the whole workspace like Auth);
///   a non-JSON or empty 403 did not come from the API's own error layer (a WAF or proxy) →
///   Transient.
/// - 404, JSON or HTML → NotFound. 408 → Transient. Other 4xx → InvalidRequest.
/// - 3xx (redirects are not followed, see `Client::new`) → InvalidRequest: a base-URL bug.
/// - 5xx → Transient, except 504 on a non-GET → Ambiguous: a gateway timeout means the origin
///   may have received and processed the request, the same case as our own timeout.
pub(crate) fn classify(
    read_only: bool,
    status: u16,
    headers: &HeaderMap,
    body: &ParsedBody,
) -> Option<ErrorClass> {
    use ErrorClass::*;
    let hint = hint(body);
    let class = match status {
        200..=299 => match body {
            // Not the API's JSON (the web app's page at a wrong base URL, a captive proxy): a
            // configuration bug on a read; on a write nobody knows what happened to it.
            ParsedBody::NotJson { .. } if read_only => InvalidRequest,
            ParsedBody::NotJson { .. } => Ambiguous,
            ParsedBody::Error(_) => match hint {
                Some(Hint::Throttled) => RateLimited,
                Some(Hint::Quota) => QuotaExhausted,
                Some(Hint::Auth) => Auth,
                Some(Hint::NotFound) => NotFound,
                Some(Hint::Fault) => Transient,
                None => InvalidRequest,
            },
            _ => return None,
        },
        429 if hint == Some(Hint::Quota) => QuotaExhausted,
        429 => RateLimited,
        401 => Auth,
        403 => match hint {
            Some(Hint::Throttled) => RateLimited,
            _ if headers.contains_key(RETRY_AFTER) => RateLimited,
            Some(Hint::Quota) => QuotaExhausted,
            _ if matches!(body, ParsedBody::Empty | ParsedBody::NotJson { .. }) => Transient,
            _ => InvalidRequest,
        },
        404 => NotFound,
        408 => Transient,
        504 if !read_only => Ambiguous,
        500..=599 => Transient,
        300..=499 => InvalidRequest,
        // 1xx as a final status or a code outside the standard range: a broken intermediary.
        _ => Transient,
    };
    Some(class)
}

/// Reads `Retry-After` as delay-seconds or as an HTTP-date (RFC 9110 §10.2.3). A date in the
/// past gives zero; anything unreadable gives `None`.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    // Not standard, but some servers send fractions; accept them rather than ignore the hint.
    if let Ok(seconds) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).ok();
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timelines::envelope::{ErrorBody, parse_body};
    use reqwest::header::HeaderValue;

    fn error_body(message: &str, code: Option<&str>) -> ParsedBody {
        ParsedBody::Error(ErrorBody {
            message: Some(message.to_owned()),
            error_code: code.map(str::to_owned),
            field_errors: Vec::new(),
        })
    }

    fn class(read_only: bool, status: u16, body: &ParsedBody) -> Option<ErrorClass> {
        classify(read_only, status, &HeaderMap::new(), body)
    }

    #[test]
    fn the_classification_table_covers_every_class() {
        use ErrorClass::*;
        let ok = parse_body(br#"{"status":"ok","data":{}}"#);
        let html = parse_body(b"<!DOCTYPE html><html><body>Not here</body></html>");
        let denied = error_body("Access denied", None);
        let cases: &[(bool, u16, &ParsedBody, Option<ErrorClass>)] = &[
            (true, 200, &ok, None),
            (false, 204, &ParsedBody::Empty, None),
            (true, 200, &html, Some(InvalidRequest)),
            (false, 200, &html, Some(Ambiguous)),
            (
                true,
                200,
                &error_body("Chat is closed", None),
                Some(InvalidRequest),
            ),
            (
                false,
                200,
                &error_body("Mass sending quota exceeded", None),
                Some(QuotaExhausted),
            ),
            (
                true,
                200,
                &error_body("Too many requests", None),
                Some(RateLimited),
            ),
            (
                true,
                200,
                &error_body("x", Some("invalid_token")),
                Some(Auth),
            ),
            (
                true,
                200,
                &error_body("Chat not found", None),
                Some(NotFound),
            ),
            (true, 429, &ParsedBody::Empty, Some(RateLimited)),
            (
                true,
                429,
                &error_body("Rate limit exceeded", None),
                Some(RateLimited),
            ),
            (
                true,
                429,
                &error_body("Request limit exceeded", None),
                Some(RateLimited),
            ),
            (
                true,
                429,
                &error_body("API calls quota exhausted", None),
                Some(QuotaExhausted),
            ),
            (
                true,
                401,
                &error_body("Invalid or expired token", None),
                Some(Auth),
            ),
            (true, 401, &parse_body(b"Unauthorized"), Some(Auth)),
            (
                false,
                403,
                &error_body("Too many requests, slow down", None),
                Some(RateLimited),
            ),
            (
                false,
                403,
                &error_body("Throttled", None),
                Some(RateLimited),
            ),
            (
                false,
                403,
                &error_body("x", Some("quota_exceeded")),
                Some(QuotaExhausted),
            ),
            (
                false,
                403,
                &error_body("Monthly limit reached", None),
                Some(QuotaExhausted),
            ),
            (false, 403, &denied, Some(InvalidRequest)),
            (true, 403, &html, Some(Transient)),
            (
                true,
                404,
                &error_body("Not found", Some("not_found")),
                Some(NotFound),
            ),
            (true, 404, &html, Some(NotFound)),
            (
                false,
                400,
                &error_body("phone is required", None),
                Some(InvalidRequest),
            ),
            (false, 422, &error_body("bad", None), Some(InvalidRequest)),
            (false, 409, &ParsedBody::Empty, Some(InvalidRequest)),
            (false, 301, &ParsedBody::Empty, Some(InvalidRequest)),
            (true, 408, &ParsedBody::Empty, Some(Transient)),
            (false, 500, &error_body("boom", None), Some(Transient)),
            (false, 502, &html, Some(Transient)),
            (false, 503, &html, Some(Transient)),
            (true, 504, &html, Some(Transient)),
            (false, 504, &html, Some(Ambiguous)),
        ];
        for (read_only, status, body, expected) in cases {
            assert_eq!(
                class(*read_only, *status, body),
                *expected,
                "read_only={read_only} status={status} body={body:?}"
            );
        }
    }

    #[test]
    fn a_403_with_retry_after_is_rate_limiting() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("5"));
        let denied = error_body("Access denied", None);
        assert_eq!(
            classify(true, 403, &headers, &denied),
            Some(ErrorClass::RateLimited)
        );
    }

    #[test]
    fn retry_after_reads_seconds() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static(" 7 "));
        assert_eq!(
            retry_after(&headers, SystemTime::now()),
            Some(Duration::from_secs(7))
        );
        headers.insert(RETRY_AFTER, HeaderValue::from_static("1.5"));
        assert_eq!(
            retry_after(&headers, SystemTime::now()),
            Some(Duration::from_millis(1500))
        );
    }

    #[test]
    fn retry_after_reads_an_http_date_relative_to_now() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut headers = HeaderMap::new();
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        headers.insert(RETRY_AFTER, HeaderValue::from_str(&later).unwrap());
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(90)));

        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(90));
        headers.insert(RETRY_AFTER, HeaderValue::from_str(&earlier).unwrap());
        assert_eq!(retry_after(&headers, now), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_ignores_garbage_and_absence() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers, SystemTime::now()), None);
        for bad in ["soon", "-3", "NaN"] {
            headers.insert(RETRY_AFTER, HeaderValue::from_static(bad));
            assert_eq!(retry_after(&headers, SystemTime::now()), None, "{bad}");
        }
    }
}
