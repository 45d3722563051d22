//! Kinds that create something on each call: messages, files, voice notes, notes.
//!
//! A send is never repeated blindly. When the previous attempt was cut off (worker crash,
//! shutdown) or ended ambiguously (timeout or dropped connection after the request went out),
//! `Job::interrupted` is set and [`already_sent`] looks for the message first: in our own
//! `timelines.messages` (recorded the moment the API accepted it), then in the chat's history.

use chrono::Duration as ChronoDuration;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Attempt, ChatRef, Dispatcher, Failure, payload, store};
use crate::queue::{Job, Outcome};
use crate::timelines::request::{
    ChatFilter, MessageQuery, SendInChat, SendToJid, SendToPhone, SortOrder, UploadFromUrl,
};
use crate::timelines::{Client, MessageAccepted};

/// Payload of `send_message` and `send_file` (the file fields only for the latter).
#[derive(Debug, Deserialize)]
pub struct SendPayload {
    phone: Option<String>,
    chat_id: Option<IdValue>,
    jid: Option<String>,
    text: Option<String>,
    file_uid: Option<String>,
    reply_to: Option<String>,
    label: Option<String>,
    chat_name: Option<String>,
    whatsapp_account_phone: Option<String>,
    attachment_template_id: Option<i64>,
    file_url: Option<String>,
    filename: Option<String>,
    content_type: Option<String>,
}

/// A chat id as the SQL API accepts it: a number or a string of digits.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum IdValue {
    /// `42`
    Number(i64),
    /// `"42"`
    Text(String),
}

impl IdValue {
    /// The id, if it is one.
    pub fn get(&self) -> Option<i64> {
        match self {
            IdValue::Number(n) => Some(*n),
            IdValue::Text(s) => s.parse().ok(),
        }
    }
}

/// Where a message goes.
enum Target {
    Chat(i64),
    Phone(String),
    Jid(String),
}

impl SendPayload {
    fn chat_id(&self) -> Option<i64> {
        self.chat_id.as_ref().and_then(IdValue::get)
    }
}

/// `send_message`: to a chat, a phone (creating the chat) or a JID.
pub async fn send_message(d: &Dispatcher, job: &Job) -> Attempt {
    let p: SendPayload = payload(job)?;
    send(d, job, &p, p.file_uid.clone()).await
}

/// `send_file`: upload `file_url` (once: the uid is checkpointed), then send it.
pub async fn send_file(d: &Dispatcher, job: &Job) -> Attempt {
    let p: SendPayload = payload(job)?;
    let client = d.client(job)?;
    let earlier = job
        .result
        .as_ref()
        .and_then(|r| r.get("file_uid"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let file_uid = match earlier {
        Some(uid) => uid,
        None => {
            let url = p
                .file_url
                .clone()
                .ok_or_else(|| Failure::Permanent("\"file_url\" is required".into()))?;
            let upload = UploadFromUrl {
                download_url: url,
                filename: p.filename.clone(),
                content_type: p.content_type.clone(),
            };
            let file = client.upload_file_from_url(&upload).await?;
            store::upsert_files(&d.pool, &job.workspace, std::slice::from_ref(&file.raw)).await?;
            d.checkpoint(job, &json!({ "file_uid": file.uid })).await?;
            file.uid
        }
    };
    let mut result = send(d, job, &p, Some(file_uid.clone())).await?;
    result["file_uid"] = json!(file_uid);
    Ok(result)
}

async fn send(d: &Dispatcher, job: &Job, p: &SendPayload, file_uid: Option<String>) -> Attempt {
    let client = d.client(job)?;
    let target = match (p.chat_id(), &p.phone, &p.jid) {
        (Some(id), _, _) => Target::Chat(id),
        // A reply needs the chat: POST /messages has no reply_to.
        (None, Some(phone), _) if p.reply_to.is_some() => {
            match d.chat_for_phone(&client, &job.workspace, phone).await? {
                Some(id) => Target::Chat(id),
                None => {
                    return Err(Failure::Permanent(format!(
                        "reply_to needs an existing chat, and {phone} has none"
                    )));
                }
            }
        }
        (None, Some(phone), _) => Target::Phone(phone.clone()),
        (None, None, Some(jid)) => Target::Jid(jid.clone()),
        _ => {
            return Err(Failure::Permanent(
                "\"phone\", \"chat_id\" or \"jid\" is required".into(),
            ));
        }
    };
    if job.interrupted
        && let Some(found) = already_sent(
            d,
            &client,
            job,
            &target,
            p.text.as_deref(),
            file_uid.is_some(),
            false,
        )
        .await?
    {
        return Ok(found);
    }
    let accepted: MessageAccepted = match &target {
        Target::Chat(chat_id) => {
            let body = SendInChat {
                text: p.text.clone(),
                file_uid: file_uid.clone(),
                reply_to: p.reply_to.clone(),
                label: p.label.clone(),
                chat_name: p.chat_name.clone(),
                attachment_template_id: p.attachment_template_id,
            };
            client.send_in_chat(*chat_id, &body).await?
        }
        Target::Phone(phone) => {
            let body = SendToPhone {
                phone: phone.clone(),
                whatsapp_account_phone: p.whatsapp_account_phone.clone(),
                text: p.text.clone(),
                file_uid: file_uid.clone(),
                label: p.label.clone(),
                chat_name: p.chat_name.clone(),
                attachment_template_id: p.attachment_template_id,
            };
            client.send_to_phone(&body).await?
        }
        Target::Jid(jid) => {
            let body = SendToJid {
                jid: jid.clone(),
                whatsapp_account_phone: p.whatsapp_account_phone.clone(),
                text: p.text.clone(),
                file_uid: file_uid.clone(),
                label: p.label.clone(),
                attachment_template_id: p.attachment_template_id,
                reply_to: p.reply_to.clone(),
            };
            client.send_to_jid(&body).await?
        }
    };
    let chat_id = match target {
        Target::Chat(id) => Some(id),
        // Known only if the chat existed before; a new chat's id is learnt on first lookup.
        // After the send nothing may fail the attempt (a retry would send again): a failed
        // lookup just leaves the id out.
        Target::Phone(phone) => d
            .known_chat_for_phone(&job.workspace, &phone)
            .await
            .ok()
            .flatten(),
        Target::Jid(_) => None,
    };
    let sent = store::SentMessage {
        uid: &accepted.message_uid,
        chat_id,
        job_id: job.id,
        text: p.text.as_deref(),
        phone: p.phone.as_deref(),
        has_attachment: file_uid.is_some(),
        message_type: "whatsapp",
    };
    record(d, job, &sent).await;
    Ok(json!({ "message_uid": accepted.message_uid, "chat_id": chat_id }))
}

/// Writes a just-sent message to `timelines.messages`. The send happened: a failure here must
/// not fail the job (a retry would send again), so it is logged, and the job's result still
/// carries the uid.
async fn record(d: &Dispatcher, job: &Job, sent: &store::SentMessage<'_>) {
    if let Err(error) = store::record_sent_message(&d.pool, &job.workspace, sent).await {
        tracing::warn!(job_id = job.id, %error, "recording a sent message in timelines.messages failed");
    }
}

/// Looks for the message an earlier, cut-off attempt of `job` may have sent. Returns the job's
/// result if it was sent; `None` if it certainly was not (so sending is safe).
async fn already_sent(
    d: &Dispatcher,
    client: &Client,
    job: &Job,
    target: &Target,
    text: Option<&str>,
    with_file: bool,
    note: bool,
) -> Result<Option<Value>, Failure> {
    // The API accepted it and we recorded it before the attempt was cut off.
    let recorded: Option<(String, Option<i64>)> = sqlx::query_as(
        "SELECT message_uid, chat_id FROM timelines.messages WHERE job_id = $1 LIMIT 1",
    )
    .bind(job.id)
    .fetch_optional(&d.pool)
    .await?;
    if let Some((uid, chat_id)) = recorded {
        tracing::info!(job_id = job.id, message_uid = %uid, "an earlier attempt already sent this message");
        return Ok(Some(
            json!({ "message_uid": uid, "chat_id": chat_id, "deduplicated": true }),
        ));
    }
    let chats: Vec<i64> = match target {
        Target::Chat(id) => vec![*id],
        // Every direct chat with the phone, fresh from the API: with several WhatsApp accounts
        // there is one per account, and the lookup does not say which account sent (§5.2).
        // No chat at all means no message: sending to a phone creates its chat.
        Target::Phone(phone) => {
            let filter = ChatFilter {
                phone: Some(phone.clone()),
                ..ChatFilter::default()
            };
            let page = client.list_chats(&filter).await?;
            page.chats
                .iter()
                .filter(|c| c.is_group != Some(true))
                .map(|c| c.id)
                .collect()
        }
        Target::Jid(_) => {
            // GET /chats cannot look a chat up by JID, so the check is impossible: stop rather
            // than risk a duplicate.
            return Err(Failure::Outcome(Outcome::fail(
                "an earlier attempt may have sent this message and a JID send cannot be checked; \
                 look at the chat, then use timelines.retry() to send it anyway",
            )));
        }
    };
    for chat_id in chats {
        if let Some(found) = sent_in_chat(d, client, job, chat_id, text, with_file, note).await? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// Looks in one chat's recent history for this job's message (see [`already_sent`]).
async fn sent_in_chat(
    d: &Dispatcher,
    client: &Client,
    job: &Job,
    chat_id: i64,
    text: Option<&str>,
    with_file: bool,
    note: bool,
) -> Result<Option<Value>, Failure> {
    let query = MessageQuery {
        from_me: Some(true),
        after: Some(job.created_at - ChronoDuration::minutes(1)),
        sorting_order: Some(SortOrder::Desc),
        ..MessageQuery::default()
    };
    let page = client.chat_messages(chat_id, &query).await?;
    // A message with the same text that another job sent is that job's, not this one's.
    let uids: Vec<&str> = page.messages.iter().map(|m| m.uid.as_str()).collect();
    let others: Vec<String> = sqlx::query_scalar(
        "SELECT message_uid FROM timelines.messages
          WHERE workspace = $1 AND message_uid = ANY($2) AND job_id IS NOT NULL AND job_id <> $3",
    )
    .bind(&job.workspace)
    .bind(&uids)
    .bind(job.id)
    .fetch_all(&d.pool)
    .await?;
    let found = page
        .messages
        .iter()
        .filter(|m| !others.contains(&m.uid))
        .find(|m| {
            let same_text = m.text.as_deref().unwrap_or("") == text.unwrap_or("");
            let is_note = m
                .message_type
                .as_deref()
                .is_some_and(|t| t.eq_ignore_ascii_case("note"));
            same_text && is_note == note && (note || m.has_attachment.unwrap_or(false) == with_file)
        });
    let Some(message) = found else {
        return Ok(None);
    };
    tracing::info!(job_id = job.id, message_uid = %message.uid, "an earlier attempt already sent this message");
    store::upsert_messages(
        &d.pool,
        &job.workspace,
        Some(chat_id),
        std::slice::from_ref(&message.raw),
        Some(job.id),
    )
    .await?;
    Ok(Some(
        json!({ "message_uid": message.uid, "chat_id": chat_id, "deduplicated": true }),
    ))
}

#[derive(Debug, Deserialize)]
struct NotePayload {
    #[serde(flatten)]
    chat: ChatRef,
    text: String,
    is_private: Option<bool>,
}

/// `add_note`: a note is a message of type Note, so it gets the same duplicate check.
pub async fn add_note(d: &Dispatcher, job: &Job) -> Attempt {
    let p: NotePayload = payload(job)?;
    let (client, chat_id) = d.addressed(job, &p.chat).await?;
    if job.interrupted
        && let Some(found) = already_sent(
            d,
            &client,
            job,
            &Target::Chat(chat_id),
            Some(&p.text),
            false,
            true,
        )
        .await?
    {
        return Ok(found);
    }
    let accepted = client
        .add_note(chat_id, &p.text, p.is_private.unwrap_or(true))
        .await?;
    let sent = store::SentMessage {
        uid: &accepted.message_uid,
        chat_id: Some(chat_id),
        job_id: job.id,
        text: Some(&p.text),
        phone: None,
        has_attachment: false,
        message_type: "Note",
    };
    record(d, job, &sent).await;
    Ok(json!({ "message_uid": accepted.message_uid, "chat_id": chat_id }))
}

#[derive(Debug, Deserialize)]
struct UploadPayload {
    download_url: String,
    filename: Option<String>,
    content_type: Option<String>,
}

/// `upload_file`: repeated after an uncertain attempt rather than matched by name: a spare copy
/// of a file is harmless, while taking another job's file of the same name would not be.
pub async fn upload_file(d: &Dispatcher, job: &Job) -> Attempt {
    let p: UploadPayload = payload(job)?;
    let client = d.client(job)?;
    let upload = UploadFromUrl {
        download_url: p.download_url,
        filename: p.filename,
        content_type: p.content_type,
    };
    let file = client.upload_file_from_url(&upload).await?;
    store::upsert_files(&d.pool, &job.workspace, std::slice::from_ref(&file.raw)).await?;
    Ok(json!({ "file_uid": file.uid, "filename": file.filename, "size": file.size }))
}

#[derive(Debug, Deserialize)]
struct VoicePayload {
    #[serde(flatten)]
    chat: ChatRef,
    audio_url: String,
}

/// `send_voice`: download the audio from `audio_url`, then send it as a voice note.
pub async fn send_voice(d: &Dispatcher, job: &Job) -> Attempt {
    let p: VoicePayload = payload(job)?;
    let (client, chat_id) = d.addressed(job, &p.chat).await?;
    if job.interrupted
        && let Some(found) =
            already_sent(d, &client, job, &Target::Chat(chat_id), None, true, false).await?
    {
        return Ok(found);
    }
    let (audio, filename, content_type) = download_audio(d, &p.audio_url).await?;
    let accepted = client
        .send_voice_message(chat_id, audio, &filename, &content_type)
        .await?;
    let sent = store::SentMessage {
        uid: &accepted.message_uid,
        chat_id: Some(chat_id),
        job_id: job.id,
        text: None,
        phone: p.chat.phone.as_deref(),
        has_attachment: true,
        message_type: "whatsapp",
    };
    record(d, job, &sent).await;
    Ok(json!({ "message_uid": accepted.message_uid, "chat_id": chat_id }))
}

/// Most audio a voice note may carry (the reference lists 16 MB for audio).
const MAX_AUDIO_BYTES: usize = 16 * 1024 * 1024;

async fn download_audio(d: &Dispatcher, url: &str) -> Result<(Vec<u8>, String, String), Failure> {
    let response = d
        .downloads
        .get(url)
        .send()
        .await
        .map_err(|e| Failure::Retry(format!("downloading audio_url: {e}")))?;
    let status = response.status();
    if status.is_client_error() {
        return Err(Failure::Permanent(format!(
            "downloading audio_url: HTTP {status}"
        )));
    }
    if !status.is_success() {
        return Err(Failure::Retry(format!(
            "downloading audio_url: HTTP {status}"
        )));
    }
    let filename = url
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or("voice.ogg")
        .to_owned();
    let content_type = match filename
        .rsplit('.')
        .next()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("mp3") => "audio/mpeg",
        _ => "audio/ogg",
    }
    .to_owned();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| Failure::Retry(format!("downloading audio_url: {e}")))?;
    if bytes.len() > MAX_AUDIO_BYTES {
        return Err(Failure::Permanent(format!(
            "audio_url is {} bytes; voice notes take at most 16 MB",
            bytes.len()
        )));
    }
    Ok((bytes.to_vec(), filename, content_type))
}
