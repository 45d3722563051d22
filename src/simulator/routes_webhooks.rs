//! Webhook subscription endpoints #28–#32 (§4.7, §6).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::render;
use super::reply::{ApiError, ApiResult, ok};
use super::state::{Shared, Webhook};
use super::validate::{Fields, JsonObject, check_url};
use super::webhooks::{EVENT_TYPES, MAX_WEBHOOKS};

/// A `{webhook_id}` path segment: any string is accepted (§4.7); only integers name one.
fn webhook_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("Webhook"))
}

fn check_event_type(f: &mut Fields<'_>, event_type: Option<&str>) {
    if let Some(t) = event_type
        && !EVENT_TYPES.contains(&t)
    {
        f.error(
            "event_type",
            format!("unknown event type {t:?}; see the webhook reference for the list"),
        );
    }
}

fn check_hook_url(f: &mut Fields<'_>, url: Option<&str>) {
    if let Some(Err(msg)) = url.map(check_url) {
        f.error("url", msg);
    }
}

/// #28 `GET /webhooks`: a flat array (§2.2).
pub(crate) async fn list(State(sim): State<Shared>) -> ApiResult {
    let world = sim.world();
    let hooks: Vec<Value> = world.webhooks.values().map(render::webhook).collect();
    Ok(ok(json!(hooks)))
}

/// #29 `POST /webhooks`: `event_type`* (one of §6.2), `url`*, `enabled` (default true). At most
/// 10 per workspace (§6.1); the 11th is 403 (a plan limit, §8.1).
pub(crate) async fn create(State(sim): State<Shared>, JsonObject(body): JsonObject) -> ApiResult {
    let mut f = Fields::new(&body);
    let event_type = f.req_str("event_type");
    check_event_type(&mut f, event_type.as_deref());
    let url = f.req_str("url");
    check_hook_url(&mut f, url.as_deref());
    let enabled = f.opt_bool("enabled").unwrap_or(true);
    f.finish()?;
    let mut world = sim.world();
    if world.webhooks.len() >= MAX_WEBHOOKS {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "webhooks_limit_reached",
            format!("Access denied: the plan allows {MAX_WEBHOOKS} webhooks per workspace"),
        ));
    }
    let id = world.next_webhook_id;
    world.next_webhook_id += 1;
    let hook = Webhook {
        id,
        event_type: event_type.expect("required"),
        url: url.expect("required"),
        enabled,
        errors_counter: 0,
    };
    let data = render::webhook(&hook);
    world.webhooks.insert(id, hook);
    Ok(ok(data))
}

/// #30 `GET /webhooks/{webhook_id}`.
pub(crate) async fn get(State(sim): State<Shared>, Path(raw): Path<String>) -> ApiResult {
    let id = webhook_id(&raw)?;
    let world = sim.world();
    let hook = world
        .webhooks
        .get(&id)
        .ok_or_else(|| ApiError::not_found("Webhook"))?;
    Ok(ok(render::webhook(hook)))
}

/// #31 `PUT /webhooks/{webhook_id}`: partial update, omitted fields unchanged.
pub(crate) async fn update(
    State(sim): State<Shared>,
    Path(raw): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult {
    let id = webhook_id(&raw)?;
    let mut f = Fields::new(&body);
    let event_type = f.opt_str("event_type");
    check_event_type(&mut f, event_type.as_deref());
    let url = f.opt_str("url");
    check_hook_url(&mut f, url.as_deref());
    let enabled = f.opt_bool("enabled");
    let mut world = sim.world();
    let Some(hook) = world.webhooks.get_mut(&id) else {
        return Err(ApiError::not_found("Webhook"));
    };
    f.finish()?;
    if let Some(t) = event_type {
        hook.event_type = t;
    }
    if let Some(u) = url {
        hook.url = u;
    }
    if let Some(e) = enabled {
        hook.enabled = e;
    }
    Ok(ok(render::webhook(hook)))
}

/// #32 `DELETE /webhooks/{webhook_id}`: `{"status":"ok","data":null}` (§10.1 #9).
pub(crate) async fn delete(State(sim): State<Shared>, Path(raw): Path<String>) -> ApiResult {
    let id = webhook_id(&raw)?;
    let mut world = sim.world();
    match world.webhooks.remove(&id) {
        Some(_) => Ok(ok(Value::Null)),
        None => Err(ApiError::not_found("Webhook")),
    }
}
