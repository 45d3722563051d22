//! The fake CRM of `bench ingest`: deterministic contacts, served by the generic JSON contract
//! (crm-sources.md §2.7): `GET /contacts?updated_since=&cursor=&limit=` with `X-Api-Key`,
//! answering `{"data": [...], "next_cursor": "..." | null}` in (updated_at, id) order.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{SecondsFormat, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// The key the fake accepts in `X-Api-Key`.
pub(super) const API_KEY: &str = "bench-key";

/// One contact of the fake CRM. `e164` is what the phone must normalise to (None: the record
/// must be skipped, as `invalid_phone` when `phone` has text, else `missing_phone`).
#[derive(Debug, Clone, Serialize)]
pub(super) struct Contact {
    pub(super) id: u32,
    created_at: String,
    updated_at: String,
    first_name: &'static str,
    last_name: &'static str,
    email: String,
    pub(super) phone: Option<String>,
    #[serde(skip)]
    pub(super) e164: Option<String>,
}

const FIRST_NAMES: &[&str] = &[
    "Ana", "Ben", "Chloe", "David", "Elif", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Keiko",
    "Luis",
];
const LAST_NAMES: &[&str] = &[
    "Silva", "Okafor", "Novak", "Tanaka", "Weber", "Haddad", "Moreau", "Costa",
];
/// Area codes in service (libphonenumber accepts `[2-9]XX-XXXX` after them).
const US_AREAS: &[u32] = &[212, 213, 305, 312, 415, 512, 617, 646, 702, 718, 801, 917];
const INVALID: &[&str] = &[
    "n/a",
    "+1 555",
    "12345",
    "+44 20 12",
    "call me",
    "+55 11 123",
];

/// The fake CRM's `n` contacts, in (updated_at, id) order, each computed from its position
/// and the seed: the benchmark process holds none of them, so its own RSS stays below the
/// poll's (the kernel counts the parent's peak in a child's `ru_maxrss` until exec).
#[derive(Debug, Clone, Copy)]
pub(super) struct Dataset {
    n: usize,
    seed: u64,
    start_millis: i64,
}

impl Dataset {
    /// Most contacts: beyond 3.6 million, several would share each millisecond of the hour.
    pub(super) const MAX: usize = 1_000_000;

    /// `n` contacts spread over the hour that ended a minute ago (the poll's window ends at the
    /// server's `Date` header, truncated to the second, so it holds them all).
    pub(super) fn new(n: usize, seed: u64) -> Self {
        assert!((1..=Self::MAX).contains(&n), "1 to {} contacts", Self::MAX);
        Self {
            n,
            seed,
            start_millis: Utc::now().timestamp_millis() - 61 * 60_000,
        }
    }

    /// How many contacts there are.
    pub(super) fn len(&self) -> usize {
        self.n
    }

    /// About one in ten contacts (at odd positions) has the same `updated_at` as the one before.
    fn shares_time(&self, pos: usize) -> bool {
        pos % 2 == 1 && self.rng(pos, 1).random_ratio(1, 5)
    }

    fn millis(&self, pos: usize) -> i64 {
        let slot = if self.shares_time(pos) { pos - 1 } else { pos };
        self.start_millis + slot as i64 * 3_600_000 / self.n as i64
    }

    /// Distinct ids in no particular order (an odd multiplier is a bijection modulo 2^32); of
    /// two contacts with the same time, the first gets the smaller id.
    fn id(&self, pos: usize) -> u32 {
        let raw = |p: usize| (p as u32).wrapping_mul(2_654_435_761);
        if self.shares_time(pos) {
            raw(pos).max(raw(pos - 1))
        } else if pos + 1 < self.n && self.shares_time(pos + 1) {
            raw(pos).min(raw(pos + 1))
        } else {
            raw(pos)
        }
    }

    fn rng(&self, pos: usize, stream: u64) -> StdRng {
        StdRng::seed_from_u64(self.seed ^ (pos as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ stream)
    }

    /// The contact at `pos`.
    pub(super) fn contact(&self, pos: usize) -> Contact {
        let mut rng = self.rng(pos, 2);
        let id = self.id(pos);
        let first_name = FIRST_NAMES[rng.random_range(0..FIRST_NAMES.len())];
        let last_name = LAST_NAMES[rng.random_range(0..LAST_NAMES.len())];
        let (phone, e164) = phone(&mut rng);
        let updated = self.millis(pos);
        // New contacts: created up to ten minutes before their last change.
        let created = updated - rng.random_range(0..600_000);
        let time = |millis: i64| {
            Utc.timestamp_millis_opt(millis)
                .single()
                .expect("a recent time")
                .to_rfc3339_opts(SecondsFormat::Millis, true)
        };
        Contact {
            id,
            created_at: time(created),
            updated_at: time(updated),
            first_name,
            last_name,
            email: format!("{first_name}.{last_name}.{id}@example.com").to_lowercase(),
            phone,
            e164,
        }
    }

    /// The first position with `updated_at >= since`.
    fn first_since(&self, since: i64) -> usize {
        let (mut low, mut high) = (0, self.n);
        while low < high {
            let mid = (low + high) / 2;
            if self.millis(mid) < since {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        low
    }
}

/// A phone as CRMs hold them, and its E.164 form: US, London and São Paulo mobile numbers in
/// varied formats; 0.5 % invalid text, 0.5 % missing (null or empty).
fn phone(rng: &mut StdRng) -> (Option<String>, Option<String>) {
    match rng.random_range(0..1000) {
        0..5 => (
            Some(INVALID[rng.random_range(0..INVALID.len())].to_owned()),
            None,
        ),
        5..10 => (rng.random_bool(0.5).then(String::new), None),
        _ => {
            let style = rng.random_range(0..3);
            let (text, e164) = match rng.random_range(0..3) {
                0 => us_phone(rng, style),
                1 => london_phone(rng, style),
                _ => sao_paulo_mobile(rng, style),
            };
            (Some(text), Some(e164))
        }
    }
}

fn us_phone(rng: &mut StdRng, style: u8) -> (String, String) {
    let area = US_AREAS[rng.random_range(0..US_AREAS.len())];
    // No N11 exchanges (211, 411, 911 ...): service codes, not numbers.
    let exchange = loop {
        let e = rng.random_range(200..1000);
        if e % 100 != 11 {
            break e;
        }
    };
    let line = rng.random_range(0..10_000);
    let text = match style {
        0 => format!("+1 ({area}) {exchange}-{line:04}"),
        1 => format!("+1 {area}-{exchange}-{line:04}"),
        _ => format!("+1.{area}.{exchange}.{line:04}"),
    };
    (text, format!("+1{area}{exchange}{line:04}"))
}

/// 020 7946 0000-0999: Ofcom's range for drama, valid and never assigned.
fn london_phone(rng: &mut StdRng, style: u8) -> (String, String) {
    let line = rng.random_range(0..1000);
    let text = match style {
        0 => format!("+44 20 7946 0{line:03}"),
        1 => format!("+44 (20) 7946-0{line:03}"),
        _ => format!("+442079460{line:03}"),
    };
    (text, format!("+442079460{line:03}"))
}

fn sao_paulo_mobile(rng: &mut StdRng, style: u8) -> (String, String) {
    let high = rng.random_range(5000..10_000);
    let low = rng.random_range(0..10_000);
    let text = match style {
        0 => format!("+55 11 9{high}-{low:04}"),
        1 => format!("+55 (11) 9{high} {low:04}"),
        _ => format!("+55119{high}{low:04}"),
    };
    (text, format!("+55119{high}{low:04}"))
}

/// The fake CRM's state: its contacts and what it saw.
pub(super) struct Crm {
    data: Dataset,
    /// When the first request arrived.
    pub(super) first_request: OnceLock<Instant>,
    /// Requests served.
    pub(super) requests: AtomicU32,
}

/// A running fake CRM.
pub(super) struct FakeCrm {
    pub(super) addr: SocketAddr,
    pub(super) state: Arc<Crm>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeCrm {
    pub(super) async fn start(data: Dataset) -> anyhow::Result<Self> {
        let state = Arc::new(Crm {
            data,
            first_request: OnceLock::new(),
            requests: AtomicU32::new(0),
        });
        let app = axum::Router::new()
            .route("/contacts", axum::routing::get(list))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "the fake CRM stopped");
            }
        });
        Ok(Self {
            addr,
            state,
            stop,
            task,
        })
    }

    pub(super) async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    updated_since: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

#[derive(Serialize)]
struct ListAnswer {
    data: Vec<Contact>,
    next_cursor: Option<String>,
}

/// `GET /contacts?updated_since=&cursor=&limit=`: records with `updated_at >= updated_since`
/// in (updated_at, id) order. The page size is 100–200, chosen from the position (so the same
/// request gets the same page), and never more than `limit`; the cursor is the position.
async fn list(
    State(crm): State<Arc<Crm>>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Response {
    crm.first_request.get_or_init(Instant::now);
    crm.requests.fetch_add(1, Ordering::Relaxed);
    if headers.get("x-api-key").and_then(|v| v.to_str().ok()) != Some(API_KEY) {
        return (StatusCode::UNAUTHORIZED, "bad X-Api-Key").into_response();
    }
    let Some(since) = query
        .updated_since
        .as_deref()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
    else {
        return (StatusCode::BAD_REQUEST, "updated_since: an RFC 3339 time").into_response();
    };
    let since = since.timestamp_millis();
    let first = crm.data.first_since(since);
    let start = match query.cursor.as_deref().map(str::parse::<usize>) {
        None => first,
        Some(Ok(position)) => position.max(first),
        Some(Err(_)) => return (StatusCode::BAD_REQUEST, "bad cursor").into_response(),
    };
    let size = page_size(start).min(query.limit.unwrap_or(200).max(1));
    let end = (start + size).min(crm.data.len());
    let answer = ListAnswer {
        data: (start.min(end)..end)
            .map(|pos| crm.data.contact(pos))
            .collect(),
        next_cursor: (end < crm.data.len()).then(|| end.to_string()),
    };
    axum::Json(answer).into_response()
}

/// 100–200, spread by a multiplicative hash of the page's first position.
fn page_size(start: usize) -> usize {
    100 + ((start as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 57) as usize * 101 / 128
}

/// Reads every page of a fresh fake CRM as the poller does (in sequence, each answer parsed as
/// JSON): the ceiling the fake puts on the benchmark.
pub(super) async fn read_fake_alone(data: Dataset) -> anyhow::Result<(u32, Duration)> {
    let crm = FakeCrm::start(data).await?;
    let client = reqwest::Client::new();
    let url = format!("http://{}/contacts", crm.addr);
    let started = Instant::now();
    let (mut cursor, mut pages, mut records) = (None::<String>, 0u32, 0usize);
    loop {
        let mut query = vec![("updated_since", "2000-01-01T00:00:00.000Z".to_owned())];
        query.extend(cursor.map(|c| ("cursor", c)));
        query.push(("limit", "200".to_owned()));
        let body = client
            .get(&url)
            .header("X-Api-Key", API_KEY)
            .query(&query)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        let value: serde_json::Value = serde_json::from_slice(&body)?;
        pages += 1;
        records += value["data"].as_array().map_or(0, Vec::len);
        cursor = value["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    let elapsed = started.elapsed();
    let total = data.len();
    crm.stop().await;
    anyhow::ensure!(
        records == total,
        "the fake CRM served {records} records, not {total}"
    );
    Ok((pages, elapsed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::phone::{PhoneError, normalize};

    #[test]
    fn generated_phones_normalise_to_the_expected_e164_or_are_refused() {
        let data = Dataset::new(20_000, 7);
        for contact in (0..data.len()).map(|pos| data.contact(pos)) {
            let got = normalize(contact.phone.as_deref().unwrap_or(""), None);
            match (&contact.e164, got) {
                (Some(expected), Ok(e164)) => assert_eq!(&e164, expected, "{:?}", contact.phone),
                (None, Err(PhoneError::Invalid(_))) => assert!(contact.phone.is_some()),
                (None, Err(PhoneError::Missing)) => {
                    assert!(contact.phone.as_deref().unwrap_or("").is_empty())
                }
                (expected, got) => {
                    panic!("{:?}: expected {expected:?}, got {got:?}", contact.phone)
                }
            }
        }
    }

    #[test]
    fn contacts_are_sorted_distinct_and_page_sizes_stay_within_100_to_200() {
        let data = Dataset::new(10_000, 7);
        let keys: Vec<(i64, u32)> = (0..data.len())
            .map(|p| (data.millis(p), data.id(p)))
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        let shared = keys.windows(2).filter(|w| w[0].0 == w[1].0).count();
        assert!((800..1200).contains(&shared), "{shared} shared times");
        assert_eq!(
            data.first_since(keys[5000].0),
            5000 - usize::from(data.shares_time(5000))
        );
        let sizes: Vec<usize> = (0..5_000).map(page_size).collect();
        assert!(sizes.iter().all(|s| (100..=200).contains(s)));
        assert!(sizes.contains(&100) && sizes.contains(&200));
    }
}
