//! Workspace endpoints: accounts #23, teammates #24, quotas #25, workspace #26, invitations #27.
//! `/teammates` and `/quotas` are served too (§10.1 #1, #2: "fake serves all").

use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use serde_json::{Value, json};

use super::render;
use super::reply::{ApiError, ApiResult, ok};
use super::state::{Shared, Teammate};
use super::validate::{Fields, JsonObject, check_email};

/// Roles the invite endpoint accepts, case-insensitively (§4.5); `owner` is response-only.
const INVITE_ROLES: &[&str] = &[
    "admin",
    "team_supervisor",
    "teammate",
    "agent",
    "collaborator",
];

/// #23 `GET /whatsapp_accounts`: `{whatsapp_accounts[]}`.
pub(crate) async fn accounts(State(sim): State<Shared>) -> ApiResult {
    let world = sim.world();
    let accounts: Vec<Value> = world.accounts.iter().map(render::account).collect();
    Ok(ok(json!({ "whatsapp_accounts": accounts })))
}

/// #24 `GET /workspace/teammates` (and `/teammates`): `{teammates[]}`.
pub(crate) async fn teammates(State(sim): State<Shared>) -> ApiResult {
    let world = sim.world();
    let teammates: Vec<Value> = world
        .teammates
        .iter()
        .map(|t| render::teammate(&world, t))
        .collect();
    Ok(ok(json!({ "teammates": teammates })))
}

/// #25 `GET /workspace/quotas` (and `/quotas`): the four blocks of §4.6 with live usage. The
/// call itself is already counted in `api_calls_quota.used`.
pub(crate) async fn quotas(State(sim): State<Shared>) -> ApiResult {
    let world = sim.world();
    Ok(ok(render::quotas(&sim, &world, Utc::now())))
}

/// #26 `GET /workspace`: identity plus the same quota blocks.
pub(crate) async fn workspace(State(sim): State<Shared>) -> ApiResult {
    let world = sim.world();
    let mut data = render::quotas(&sim, &world, Utc::now());
    data["workspace_id"] = json!(world.workspace.workspace_id);
    data["display_name"] = json!(world.workspace.display_name);
    data["plan"] = json!(world.workspace.plan);
    Ok(ok(data))
}

/// #27 `POST /workspace/invitations`: adds a teammate with `invitation_status` "Pending".
/// An already-present email is a validation error; a full workspace (every seat used) is 403
/// (*INFERRED*: the reference documents no answer for either).
pub(crate) async fn invite(State(sim): State<Shared>, JsonObject(body): JsonObject) -> ApiResult {
    let mut f = Fields::new(&body);
    let email = f.req_str("email");
    if let Some(Err(msg)) = email.as_deref().map(check_email) {
        f.error("email", msg);
    }
    let first = f.opt_str("first_name").unwrap_or_default();
    let last = f.opt_str("last_name").unwrap_or_default();
    let team = f.opt_str("team_title").filter(|t| !t.is_empty());
    let role = f
        .opt_str("role")
        .map(|r| r.to_ascii_lowercase())
        .unwrap_or_else(|| "teammate".to_owned());
    if !INVITE_ROLES.contains(&role.as_str()) {
        f.error(
            "role",
            format!("must be one of {}", INVITE_ROLES.join(", ")),
        );
    }
    let mut world = sim.world();
    let email = email.unwrap_or_default();
    if world.teammate_by_email(&email).is_some() {
        f.error("email", "a teammate with this email already exists");
    }
    f.finish()?;
    if world.teammates.len() as u64 >= world.workspace.seats_total {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "seats_full",
            "Access denied: every seat of the plan is in use",
        ));
    }
    let display_name = match format!("{first} {last}").trim() {
        "" => email.split('@').next().unwrap_or_default().to_owned(),
        name => name.to_owned(),
    };
    let teammate = Teammate {
        user_id: world.next_user_id,
        display_name,
        email,
        role,
        team,
        invitation_status: Some("Pending".to_owned()),
        created_at: Utc::now(),
    };
    world.next_user_id += 1;
    let data = render::teammate(&world, &teammate);
    world.teammates.push(teammate);
    Ok(ok(data))
}
