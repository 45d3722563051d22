//! Chat endpoints: list/search #10, details #11, update #12, labels #14–#16, notes #17 (§5.2).

use std::cmp::Reverse;
use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::render;
use super::reply::{ApiError, ApiResult, FieldError, ok};
use super::routes_messages::paginate;
use super::routes_send::chat_id;
use super::state::{Chat, Kind, Message, Shared, World, digits};
use super::validate::{Fields, JsonObject, QueryParams};
use super::webhooks::{self, Event};

/// The filters of #10. Filters combine with AND; comma-separated values within one filter
/// with OR (§2.4).
struct ChatFilter {
    group: Option<bool>,
    read: Option<bool>,
    closed: Option<bool>,
    autoresponse: Option<bool>,
    created_after: Option<DateTime<Utc>>,
    created_before: Option<DateTime<Utc>>,
    phone_digits: Option<String>,
    labels: Option<Vec<String>>,
    accounts: Option<Vec<String>>,
    responsible: Option<Vec<String>>,
    names: Option<Vec<String>>,
}

impl ChatFilter {
    fn parse(query: &QueryParams, errors: &mut Vec<FieldError>) -> Self {
        let phone = query.get("phone");
        if let Some(p) = phone {
            let digits_only = p.strip_prefix('+').unwrap_or(p);
            if digits_only.is_empty() || !digits_only.bytes().all(|b| b.is_ascii_digit()) {
                errors.push(FieldError::query(
                    "phone",
                    "must be an international number such as +14155551234 (URL-encode '+' as %2B)",
                ));
            }
        }
        let lower = |v: Vec<String>| v.iter().map(|s| s.to_lowercase()).collect();
        Self {
            group: query.bool("group", errors),
            read: query.bool("read", errors),
            closed: query.bool("closed", errors),
            autoresponse: query.bool("chatgpt_autoresponse_enabled", errors),
            created_after: query.date("created_after", errors),
            created_before: query.date("created_before", errors),
            phone_digits: phone.map(digits),
            labels: query.list("label"),
            accounts: query.list("whatsapp_account_id"),
            responsible: query.list("responsible").map(lower),
            names: query.list("name").map(lower),
        }
    }

    fn matches(&self, world: &World, c: &Chat) -> bool {
        fn any(wanted: &Option<Vec<String>>, test: impl Fn(&str) -> bool) -> bool {
            wanted.as_ref().is_none_or(|w| w.iter().any(|v| test(v)))
        }
        let responsible = c.responsible.as_deref().map(str::to_lowercase);
        self.group.is_none_or(|g| c.is_group == g)
            && self.read.is_none_or(|r| c.read == r)
            && self.closed.is_none_or(|x| c.closed == x)
            && self
                .autoresponse
                .is_none_or(|a| c.chatgpt_autoresponse_enabled == a)
            && self.created_after.is_none_or(|t| c.created_at > t)
            && self.created_before.is_none_or(|t| c.created_at < t)
            && (self.phone_digits.as_ref()).is_none_or(|p| !c.is_group && &digits(&c.phone) == p)
            && any(&self.labels, |l| c.labels.iter().any(|x| x == l))
            && any(&self.accounts, |a| world.accounts[c.account].wid == a)
            && any(&self.responsible, |r| responsible.as_deref() == Some(r))
            && any(&self.names, |n| c.name.to_lowercase().contains(n))
    }
}

/// #10 `GET /chats`: `{has_more_pages, chats[]}`, 50 per page (§2.2, §2.3).
///
/// `phone` matches direct chats by the contact's number in any account (§5.2); a `+` sent
/// unencoded arrives as a space and is refused with a hint rather than silently matching
/// nothing. Order: most recent activity first, ties by id descending (*INFERRED*: the app's
/// inbox order), so pages shift when messages arrive between requests.
pub(crate) async fn list(
    State(sim): State<Shared>,
    Query(raw): Query<HashMap<String, String>>,
) -> ApiResult {
    let query = QueryParams(raw);
    let mut errors = Vec::new();
    let page = query.page(&mut errors);
    let filter = ChatFilter::parse(&query, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let world = sim.world();
    let mut chats: Vec<&Chat> = (world.chats.values())
        .filter(|c| filter.matches(&world, c))
        .collect();
    chats.sort_by_key(|c| {
        let last = c.last_message.as_ref().map_or(c.created_at, |(_, t)| *t);
        Reverse((last, c.id))
    });
    let (items, has_more_pages) = paginate(&chats, page);
    let chats: Vec<Value> = items.iter().map(|c| render::chat(&world, c)).collect();
    Ok(ok(
        json!({ "has_more_pages": has_more_pages, "chats": chats }),
    ))
}

/// #11 `GET /chats/{chat_id}`.
pub(crate) async fn get(State(sim): State<Shared>, Path(raw_id): Path<String>) -> ApiResult {
    let id = chat_id(&raw_id)?;
    let world = sim.world();
    let chat = world
        .chats
        .get(&id)
        .ok_or_else(|| ApiError::not_found("Chat"))?;
    Ok(ok(render::chat(&world, chat)))
}

/// #12 `PATCH /chats/{chat_id}`: `name` (unique in the workspace), `responsible` (a
/// teammate's email, `""` unassigns), `closed`, `read`, `chatgpt_autoresponse_enabled`.
/// Answers the updated chat (§3: M). Assignment changes fire `chat:responsible:*`.
pub(crate) async fn update(
    State(sim): State<Shared>,
    Path(raw_id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult {
    let id = chat_id(&raw_id)?;
    let mut world = sim.world();
    if !world.chats.contains_key(&id) {
        return Err(ApiError::not_found("Chat"));
    }
    let update = ChatUpdate::parse(&body, &world, id)?;
    let chat = world.chats.get_mut(&id).expect("checked above");
    let previous = chat.responsible.clone();
    update.apply(chat);
    let chat = &world.chats[&id];
    let data = render::chat(&world, chat);
    let events: Vec<Event> = assignment_event(&world, chat, previous)
        .into_iter()
        .collect();
    drop(world);
    webhooks::deliver(&sim, events);
    Ok(ok(data))
}

/// The validated fields of a #12 body; `None` leaves a field unchanged.
struct ChatUpdate {
    name: Option<String>,
    /// `Some(None)` unassigns; `Some(Some(email))` assigns (the teammate's own spelling).
    responsible: Option<Option<String>>,
    closed: Option<bool>,
    read: Option<bool>,
    autoresponse: Option<bool>,
}

impl ChatUpdate {
    fn parse(body: &Map<String, Value>, world: &World, id: i64) -> Result<Self, ApiError> {
        let mut f = Fields::new(body);
        let name = f.opt_str("name");
        let responsible = f.opt_str("responsible");
        let update = Self {
            closed: f.opt_bool("closed"),
            read: f.opt_bool("read"),
            autoresponse: f.opt_bool("chatgpt_autoresponse_enabled"),
            responsible: responsible.as_deref().map(|r| {
                let teammate = world.teammate_by_email(r).map(|t| t.email.clone());
                if teammate.is_none() && !r.is_empty() {
                    f.error(
                        "responsible",
                        "must be the email of a teammate, or \"\" to unassign",
                    );
                }
                teammate
            }),
            name,
        };
        if let Some(n) = &update.name {
            if n.trim().is_empty() {
                f.error("name", "must not be empty");
            } else if world.chats.values().any(|c| c.id != id && &c.name == n) {
                f.error(
                    "name",
                    "another chat in the workspace already has this name",
                );
            }
        }
        f.finish()?;
        Ok(update)
    }

    fn apply(self, chat: &mut Chat) {
        if let Some(n) = self.name {
            chat.name = n;
        }
        if let Some(r) = self.responsible {
            chat.responsible = r;
        }
        if let Some(c) = self.closed {
            chat.closed = c;
        }
        if let Some(r) = self.read {
            chat.read = r;
        }
        if let Some(a) = self.autoresponse {
            chat.chatgpt_autoresponse_enabled = a;
        }
    }
}

/// `chat:responsible:assigned` when the assignee changed to someone, `…:unassigned` when it
/// was cleared.
fn assignment_event(world: &World, chat: &Chat, previous: Option<String>) -> Option<Event> {
    let names: &'static [&'static str] = match (&previous, &chat.responsible) {
        (p, Some(c)) if p.as_ref() != Some(c) => &["chat:responsible:assigned"],
        (Some(_), None) => &["chat:responsible:unassigned"],
        _ => return None,
    };
    let payload = webhooks::chat_payload(world, chat, previous.as_deref());
    Some(Event { names, payload })
}

/// #14 `GET /chats/{chat_id}/labels`: `{labels:[string]}` (§10.1 #5).
pub(crate) async fn labels(State(sim): State<Shared>, Path(raw_id): Path<String>) -> ApiResult {
    let id = chat_id(&raw_id)?;
    let world = sim.world();
    let chat = world
        .chats
        .get(&id)
        .ok_or_else(|| ApiError::not_found("Chat"))?;
    Ok(ok(json!({ "labels": chat.labels })))
}

/// #15 `PUT /chats/{chat_id}/labels`: **adds** the labels (§5.2).
pub(crate) async fn add_labels(
    state: State<Shared>,
    path: Path<String>,
    body: JsonObject,
) -> ApiResult {
    change_labels(state, path, body, false)
}

/// #16 `POST /chats/{chat_id}/labels`: **replaces** every label (§5.2).
pub(crate) async fn replace_labels(
    state: State<Shared>,
    path: Path<String>,
    body: JsonObject,
) -> ApiResult {
    change_labels(state, path, body, true)
}

fn change_labels(
    State(sim): State<Shared>,
    Path(raw_id): Path<String>,
    JsonObject(body): JsonObject,
    replace: bool,
) -> ApiResult {
    let id = chat_id(&raw_id)?;
    let mut f = Fields::new(&body);
    let labels = f.labels("labels");
    f.finish()?;
    let labels = labels.expect("required");
    let mut world = sim.world();
    let chat = world
        .chats
        .get_mut(&id)
        .ok_or_else(|| ApiError::not_found("Chat"))?;
    if replace {
        chat.labels = labels;
    } else {
        for label in labels {
            if !chat.labels.contains(&label) {
                chat.labels.push(label);
            }
        }
    }
    Ok(ok(json!({ "labels": chat.labels })))
}

/// #17 `POST /chats/{chat_id}/notes`: a message with `message_type` "Note" (§5.2); stored as
/// is, `is_private` defaults to true. Notes cost no credits and fire no message webhooks.
pub(crate) async fn add_note(
    State(sim): State<Shared>,
    Path(raw_id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult {
    let id = chat_id(&raw_id)?;
    let mut f = Fields::new(&body);
    let text = f.req_str("text");
    if text.as_ref().is_some_and(|t| t.is_empty()) {
        f.error("text", "must not be empty");
    }
    let is_private = f.opt_bool("is_private").unwrap_or(true);
    f.finish()?;
    let mut world = sim.world();
    let chat = world
        .chats
        .get(&id)
        .ok_or_else(|| ApiError::not_found("Chat"))?;
    let account = &world.accounts[chat.account];
    let owner = world.owner();
    let note = Message {
        uid: Uuid::new_v4().to_string(),
        chat_id: id,
        kind: Kind::Note { is_private },
        created_at: Utc::now(),
        text: text.expect("required"),
        origin: "Public API".to_owned(),
        sender_name: owner.display_name.clone(),
        sender_phone: account.phone.clone(),
        recipient_name: chat.name.clone(),
        recipient_phone: chat.phone.clone(),
        created_by: owner.display_name.clone(),
        attachment: None,
        reply_to: None,
        credits: 0,
        reactions: Vec::new(),
    };
    let uid = note.uid.clone();
    // A note is not conversation traffic: the chat's last message stays what it was.
    let last = chat.last_message.clone();
    world.push_message(note);
    world.chats.get_mut(&id).expect("found above").last_message = last;
    Ok(ok(json!({ "message_uid": uid })))
}
