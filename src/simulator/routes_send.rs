//! Send endpoints #1–#5 (§3, §5.1). Each parses and validates its fields, then hands an
//! [`Outgoing`] to [`messaging::send`]; all answer `{"message_uid": …}`.

use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, State};
use serde_json::json;

use super::messaging::{self, Outgoing};
use super::reply::{ApiError, ApiResult, FieldError, ok};
use super::routes_files::{new_file, read_form};
use super::state::Shared;
use super::targets::Target;
use super::validate::{
    Fields, JsonObject, MAX_CHAT_NAME_CHARS, check_label, check_phone, check_text,
};

/// The content fields shared by the send endpoints.
struct Content {
    text: String,
    file_uid: Option<String>,
    template_id: Option<i64>,
    reply_to: Option<String>,
    label: Option<String>,
    chat_name: Option<String>,
}

/// Reads and checks text (≤ 2000 chars), `file_uid`, `attachment_template_id` (at least one of
/// the three), `label` (≤ 64), `chat_name` (≤ 256) and `reply_to` (`null`/`""` ignored) (§5.1).
fn content(f: &mut Fields<'_>, with_reply_to: bool) -> Content {
    let text = f.opt_str("text").unwrap_or_default();
    if let Err(msg) = check_text(&text) {
        f.error("text", msg);
    }
    let file_uid = f.opt_str("file_uid");
    let template_id = f.opt_int("attachment_template_id");
    if text.is_empty() && !f.has("file_uid") && !f.has("attachment_template_id") {
        f.error(
            "text",
            "at least one of text, file_uid or attachment_template_id is required",
        );
    }
    let label = f.opt_str("label");
    if let Some(Err(msg)) = label.as_deref().map(check_label) {
        f.error("label", msg);
    }
    let chat_name = f.opt_str("chat_name");
    if let Some(name) = &chat_name {
        let n = name.chars().count();
        if name.trim().is_empty() || n > MAX_CHAT_NAME_CHARS {
            f.error(
                "chat_name",
                format!("must be 1 to {MAX_CHAT_NAME_CHARS} characters"),
            );
        }
    }
    let reply_to = if with_reply_to {
        f.opt_str("reply_to").filter(|r| !r.is_empty())
    } else {
        None
    };
    Content {
        text,
        file_uid,
        template_id,
        reply_to,
        label,
        chat_name,
    }
}

fn outgoing(endpoint: &'static str, target: Target, c: Content) -> Outgoing {
    Outgoing {
        endpoint,
        target,
        text: c.text,
        file_uid: c.file_uid,
        template_id: c.template_id,
        reply_to: c.reply_to,
        label: c.label,
        chat_name: c.chat_name,
        voice: None,
    }
}

fn accepted(uid: String) -> ApiResult {
    Ok(ok(json!({ "message_uid": uid })))
}

/// `whatsapp_account_phone`: international format when given.
fn account_phone(f: &mut Fields<'_>) -> Option<String> {
    let phone = f.opt_str("whatsapp_account_phone");
    if let Some(Err(msg)) = phone.as_deref().map(check_phone) {
        f.error("whatsapp_account_phone", msg);
    }
    phone
}

/// A `{chat_id}` path segment. Chat ids are integers (§9); anything else names no chat.
pub(crate) fn chat_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("Chat"))
}

/// #1 `POST /messages`: send to a phone number, creating the chat if needed.
pub(crate) async fn to_phone(State(sim): State<Shared>, JsonObject(body): JsonObject) -> ApiResult {
    let mut f = Fields::new(&body);
    let phone = f.req_str("phone");
    if let Some(Err(msg)) = phone.as_deref().map(check_phone) {
        f.error("phone", msg);
    }
    let account_phone = account_phone(&mut f);
    let c = content(&mut f, false);
    f.finish()?;
    let target = Target::Phone {
        phone: phone.expect("required"),
        account_phone,
    };
    accepted(messaging::send(
        &sim,
        outgoing("POST /messages", target, c),
    )?)
}

/// #2 `POST /chats/{chat_id}/messages`: send or reply inside an existing chat.
pub(crate) async fn to_chat(
    State(sim): State<Shared>,
    Path(raw_id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult {
    let id = chat_id(&raw_id)?;
    let mut f = Fields::new(&body);
    let c = content(&mut f, true);
    f.finish()?;
    let endpoint = "POST /chats/{chat_id}/messages";
    accepted(messaging::send(
        &sim,
        outgoing(endpoint, Target::Chat(id), c),
    )?)
}

/// #3 `POST /messages/to_jid`.
pub(crate) async fn to_jid(State(sim): State<Shared>, JsonObject(body): JsonObject) -> ApiResult {
    let mut f = Fields::new(&body);
    let jid = f.req_str("jid");
    let account_phone = account_phone(&mut f);
    let c = content(&mut f, true);
    f.finish()?;
    let target = Target::Jid {
        jid: jid.expect("required"),
        account_phone,
    };
    accepted(messaging::send(
        &sim,
        outgoing("POST /messages/to_jid", target, c),
    )?)
}

/// #4 `POST /messages/to_chat_name` (deprecated, still served).
pub(crate) async fn to_chat_name(
    State(sim): State<Shared>,
    JsonObject(body): JsonObject,
) -> ApiResult {
    let mut f = Fields::new(&body);
    let name = f.req_str("chat_name");
    let mut c = content(&mut f, true);
    f.finish()?;
    // Here `chat_name` selects the chat; it must not also rename it.
    c.chat_name = None;
    let target = Target::ChatName(name.expect("required"));
    accepted(messaging::send(
        &sim,
        outgoing("POST /messages/to_chat_name", target, c),
    )?)
}

/// #5 `POST /chats/{chat_id}/voice_message`: multipart field `file`, ogg/oga/mp3 (§5.1).
pub(crate) async fn voice(
    State(sim): State<Shared>,
    Path(raw_id): Path<String>,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult {
    let id = chat_id(&raw_id)?;
    let form = read_form(multipart, sim.config.max_upload_bytes).await?;
    let Some(file) = form.file else {
        return Err(ApiError::invalid(FieldError::body(
            "file",
            "field required",
        )));
    };
    let filename = file.filename.unwrap_or_else(|| "voice.ogg".to_owned());
    let ext = filename
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase());
    let audio_type = file
        .content_type
        .as_deref()
        .is_some_and(|t| matches!(t, "audio/ogg" | "audio/mpeg" | "audio/mp3"));
    if !audio_type && !matches!(ext.as_deref(), Some("ogg" | "oga" | "mp3")) {
        return Err(ApiError::invalid(FieldError::body(
            "file",
            "voice messages must be ogg, oga or mp3 audio",
        )));
    }
    let owner = sim.world().owner().email.clone();
    let mut record = new_file(filename, file.content_type, file.bytes, owner);
    record.listed = false;
    let out = Outgoing {
        endpoint: "POST /chats/{chat_id}/voice_message",
        target: Target::Chat(id),
        text: String::new(),
        file_uid: None,
        template_id: None,
        reply_to: None,
        label: None,
        chat_name: None,
        voice: Some(record),
    };
    accepted(messaging::send(&sim, out)?)
}
