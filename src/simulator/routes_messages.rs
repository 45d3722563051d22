//! Message endpoints: details #6, status history #7, reactions #8/#9, chat history #13.

use std::cmp::Reverse;
use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::lifecycle;
use super::render::{self, ts};
use super::reply::{ApiError, ApiResult, FieldError, ok};
use super::routes_send::chat_id;
use super::state::{Reaction, Shared, World};
use super::validate::{Fields, JsonObject, QueryParams};
use super::webhooks::{self, Event};

/// Page size of every paged list (§2.3); `limit`, `per_page` and the like are ignored.
pub(crate) const PAGE_SIZE: usize = 50;

/// #6 `GET /messages/{message_uid}`.
pub(crate) async fn get(State(sim): State<Shared>, Path(uid): Path<String>) -> ApiResult {
    let world = sim.world();
    let message = world
        .message(&uid)
        .ok_or_else(|| ApiError::not_found("Message"))?;
    Ok(ok(render::message(&sim, message, Utc::now())))
}

/// #7 `GET /messages/{message_uid}/status_history`: a flat array (§2.2); failed entries carry
/// `failure_reason` (§4.9).
pub(crate) async fn status_history(
    State(sim): State<Shared>,
    Path(uid): Path<String>,
) -> ApiResult {
    let world = sim.world();
    let message = world
        .message(&uid)
        .ok_or_else(|| ApiError::not_found("Message"))?;
    let entries: Vec<Value> = lifecycle::timeline(message, Utc::now(), sim.config.status_step)
        .into_iter()
        .map(|e| {
            let mut entry = json!({ "status": e.status, "timestamp": ts(e.at) });
            if e.failed {
                entry["failure_reason"] = json!({
                    "code": 131026,
                    "title": "Message undeliverable",
                    "details": "The recipient's number is not on WhatsApp or cannot receive messages",
                });
            }
            entry
        })
        .collect();
    Ok(ok(json!(entries)))
}

/// #8 `GET /messages/{message_uid}/reactions` (§4.8).
pub(crate) async fn reactions(State(sim): State<Shared>, Path(uid): Path<String>) -> ApiResult {
    let world = sim.world();
    let message = world
        .message(&uid)
        .ok_or_else(|| ApiError::not_found("Message"))?;
    Ok(ok(render::reactions(message)))
}

/// #9 `PATCH /messages/{message_uid}/reactions`: sets the caller's reaction (`""` clears it).
/// The caller reacts as the WhatsApp account owning the chat; a new reaction keeps the
/// previous ones in `users[]` with `current: false`.
pub(crate) async fn set_reaction(
    State(sim): State<Shared>,
    Path(uid): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult {
    let mut f = Fields::new(&body);
    let emoji = f.req_str("reaction");
    if emoji.as_ref().is_some_and(|e| e.chars().count() > 16) {
        f.error("reaction", "must be a single emoji");
    }
    f.finish()?;
    let emoji = emoji.expect("required");
    let event = {
        let mut world = sim.world();
        let chat_id = world
            .message(&uid)
            .ok_or_else(|| ApiError::not_found("Message"))?
            .chat_id;
        let account = &world.accounts[world.chats[&chat_id].account];
        let (name, phone) = (account.owner_name.clone(), account.phone.clone());
        let message = world.message_mut(&uid).expect("found above");
        for r in message.reactions.iter_mut().filter(|r| r.phone == phone) {
            r.current = false;
        }
        if !emoji.is_empty() {
            message.reactions.push(Reaction {
                name: name.clone(),
                phone: phone.clone(),
                emoji: emoji.clone(),
                current: true,
            });
        }
        let message = world.message(&uid).expect("found above");
        let chat = &world.chats[&chat_id];
        Event {
            names: &["message:reaction"],
            payload: webhooks::reaction_payload(&world, chat, message, &emoji, (&name, &phone)),
        }
    };
    webhooks::deliver(&sim, vec![event]);
    Ok(ok(json!({ "message_uid": uid })))
}

/// #13 `GET /chats/{chat_id}/messages`: `{has_more_pages, messages[]}` (§2.2), 50 per page.
/// Filters: `from_me`, `after`/`before` (dates, exclusive), `after_message`/`before_message`
/// (uids of this chat, exclusive), `sorting_order` `asc`|`desc`. The default order is `desc`
/// (newest first; the reference does not say, *INFERRED*), so a client must ask for `asc`
/// explicitly when it walks forward.
pub(crate) async fn history(
    State(sim): State<Shared>,
    Path(raw_id): Path<String>,
    Query(raw): Query<HashMap<String, String>>,
) -> ApiResult {
    let id = chat_id(&raw_id)?;
    let world = sim.world();
    if !world.chats.contains_key(&id) {
        return Err(ApiError::not_found("Chat"));
    }
    let window = HistoryQuery::parse(&QueryParams(raw), &world, id)?;
    let mut selected: Vec<usize> = (0..world.messages.len())
        .filter(|&i| window.matches(&world, id, i))
        .collect();
    if !window.ascending {
        selected.sort_by_key(|&i| Reverse(i));
    }
    let now = Utc::now();
    let (items, has_more_pages) = paginate(&selected, window.page);
    let messages: Vec<Value> = items
        .iter()
        .map(|&i| render::message(&sim, &world.messages[i], now))
        .collect();
    Ok(ok(
        json!({ "has_more_pages": has_more_pages, "messages": messages }),
    ))
}

/// The query of #13; message windows are positions in `World::messages`.
struct HistoryQuery {
    page: usize,
    from_me: Option<bool>,
    after: Option<DateTime<Utc>>,
    before: Option<DateTime<Utc>>,
    after_index: Option<usize>,
    before_index: Option<usize>,
    ascending: bool,
}

impl HistoryQuery {
    fn parse(query: &QueryParams, world: &World, chat_id: i64) -> Result<Self, ApiError> {
        let mut errors = Vec::new();
        let position = |name: &str, errors: &mut Vec<FieldError>| {
            let uid = query.get(name)?;
            let index = world.message_index.get(uid).copied();
            let found = index.filter(|&i| world.messages[i].chat_id == chat_id);
            if found.is_none() {
                errors.push(FieldError::query(
                    name,
                    "no message with this uid in the chat",
                ));
            }
            found
        };
        let parsed = Self {
            page: query.page(&mut errors),
            from_me: query.bool("from_me", &mut errors),
            after: query.date("after", &mut errors),
            before: query.date("before", &mut errors),
            after_index: position("after_message", &mut errors),
            before_index: position("before_message", &mut errors),
            ascending: match query.get("sorting_order") {
                None | Some("desc") => false,
                Some("asc") => true,
                Some(_) => {
                    errors.push(FieldError::query("sorting_order", "must be asc or desc"));
                    false
                }
            },
        };
        if errors.is_empty() {
            Ok(parsed)
        } else {
            Err(ApiError::validation(errors))
        }
    }

    fn matches(&self, world: &World, chat_id: i64, i: usize) -> bool {
        let m = &world.messages[i];
        m.chat_id == chat_id
            && self.from_me.is_none_or(|want| m.is_from_me() == want)
            && self.after.is_none_or(|t| m.created_at > t)
            && self.before.is_none_or(|t| m.created_at < t)
            && self.after_index.is_none_or(|a| i > a)
            && self.before_index.is_none_or(|b| i < b)
    }
}

/// Page `page` (from 1) of `items` and whether more pages follow.
pub(crate) fn paginate<T>(items: &[T], page: usize) -> (&[T], bool) {
    let start = (page - 1).saturating_mul(PAGE_SIZE).min(items.len());
    let end = (start + PAGE_SIZE).min(items.len());
    (&items[start..end], end < items.len())
}
