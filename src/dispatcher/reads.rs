//! Kinds that read, or change state in a way that is safe to repeat: chat updates, labels,
//! reactions, and the read/sync kinds that mirror API data into SQL tables.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Attempt, ChatRef, Dispatcher, Failure, payload, store};
use crate::queue::Job;
use crate::timelines::request::{ChatFilter, ChatUpdate, MessageQuery};

/// Most pages one sync job reads (50 items each): a runaway paging loop ends, and a big sync is
/// split by the user with filters (`created_after`, `after`).
const MAX_SYNC_PAGES: u32 = 1000;

#[derive(Debug, Deserialize)]
struct LabelsPayload {
    #[serde(flatten)]
    chat: ChatRef,
    labels: Vec<String>,
    replace: Option<bool>,
}

/// `add_labels`: PUT adds, POST replaces (the reference's §5.2).
pub async fn add_labels(d: &Dispatcher, job: &Job) -> Attempt {
    let p: LabelsPayload = payload(job)?;
    let (client, chat_id) = d.addressed(job, &p.chat).await?;
    let labels = if p.replace.unwrap_or(false) {
        client.replace_chat_labels(chat_id, &p.labels).await?
    } else {
        client.add_chat_labels(chat_id, &p.labels).await?
    };
    sqlx::query("UPDATE timelines.chats SET labels = $3, synced_at = now() WHERE workspace = $1 AND chat_id = $2")
        .bind(&job.workspace)
        .bind(chat_id)
        .bind(&labels)
        .execute(&d.pool)
        .await?;
    Ok(json!({ "chat_id": chat_id, "labels": labels }))
}

#[derive(Debug, Deserialize)]
struct UpdatePayload {
    #[serde(flatten)]
    chat: ChatRef,
    name: Option<String>,
    responsible: Option<String>,
    closed: Option<bool>,
    read: Option<bool>,
    chatgpt_autoresponse_enabled: Option<bool>,
}

/// `update_chat`: PATCH the chat; the answer (when the API returns the chat) is mirrored.
pub async fn update_chat(d: &Dispatcher, job: &Job) -> Attempt {
    let p: UpdatePayload = payload(job)?;
    let (client, chat_id) = d.addressed(job, &p.chat).await?;
    let update = ChatUpdate {
        name: p.name,
        responsible: p.responsible,
        closed: p.closed,
        read: p.read,
        chatgpt_autoresponse_enabled: p.chatgpt_autoresponse_enabled,
    };
    let chat = match client.update_chat(chat_id, &update).await? {
        Some(chat) => chat,
        None => client.get_chat(chat_id).await?,
    };
    store::upsert_chats(&d.pool, &job.workspace, std::slice::from_ref(&chat.raw)).await?;
    Ok(json!({ "chat_id": chat_id }))
}

#[derive(Debug, Deserialize)]
struct ReactionPayload {
    message_uid: String,
    reaction: String,
}

/// `set_reaction`: set or clear (`""`) the workspace's reaction on a message.
pub async fn set_reaction(d: &Dispatcher, job: &Job) -> Attempt {
    let p: ReactionPayload = payload(job)?;
    d.client(job)?
        .set_reaction(&p.message_uid, &p.reaction)
        .await?;
    Ok(json!({ "message_uid": p.message_uid, "reaction": p.reaction }))
}

#[derive(Debug, Deserialize)]
struct MessagePayload {
    message_uid: String,
}

/// `refresh_message`: the message and its status history, into `timelines.messages` and
/// `timelines.message_status_history`.
pub async fn refresh_message(d: &Dispatcher, job: &Job) -> Attempt {
    let p: MessagePayload = payload(job)?;
    let client = d.client(job)?;
    let message = client.get_message(&p.message_uid).await?;
    let history = client.message_status_history(&p.message_uid).await?;
    store::upsert_messages(
        &d.pool,
        &job.workspace,
        message.chat_id,
        std::slice::from_ref(&message.raw),
        None,
    )
    .await?;
    let entries: Vec<Value> = history.iter().map(|e| e.raw.clone()).collect();
    let conn = &mut *d.pool.acquire().await?;
    store::record_status_history(conn, &job.workspace, &p.message_uid, &entries).await?;
    Ok(json!({ "message_uid": p.message_uid, "status": message.status, "history": entries.len() }))
}

#[derive(Debug, Deserialize, Default)]
struct ChatsPayload {
    label: Option<String>,
    whatsapp_account_id: Option<String>,
    group: Option<bool>,
    responsible: Option<String>,
    name: Option<String>,
    phone: Option<String>,
    read: Option<bool>,
    closed: Option<bool>,
    created_after: Option<String>,
    created_before: Option<String>,
}

fn parse_time(field: &str, value: Option<&str>) -> Result<Option<DateTime<Utc>>, Failure> {
    value
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc))
                .or_else(|_| {
                    chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d")
                        .map(|d| d.and_hms_opt(0, 0, 0).unwrap().and_utc())
                })
                .map_err(|_| {
                    Failure::Permanent(format!(
                        "\"{field}\" must be an ISO date or RFC 3339 time, got {v:?}"
                    ))
                })
        })
        .transpose()
}

fn split(list: Option<String>) -> Vec<String> {
    list.map(|s| {
        s.split(',')
            .map(|x| x.trim().to_owned())
            .filter(|x| !x.is_empty())
            .collect()
    })
    .unwrap_or_default()
}

/// `sync_chats`: every page of `GET /chats` with the job's filters, each page stored as read.
pub async fn sync_chats(d: &Dispatcher, job: &Job) -> Attempt {
    let p: ChatsPayload = payload(job)?;
    let client = d.client(job)?;
    let mut filter = ChatFilter {
        labels: split(p.label),
        whatsapp_account_ids: split(p.whatsapp_account_id),
        group: p.group,
        responsible: p.responsible,
        names: split(p.name),
        phone: p.phone,
        read: p.read,
        closed: p.closed,
        created_after: parse_time("created_after", p.created_after.as_deref())?,
        created_before: parse_time("created_before", p.created_before.as_deref())?,
        ..ChatFilter::default()
    };
    let (pages, chats, truncated) = sync_pages(d, job, "chats", |page| {
        filter.page = Some(page);
        let (client, filter) = (client.clone(), filter.clone());
        async move {
            let page = client.list_chats(&filter).await?;
            let raw: Vec<Value> = page.chats.iter().map(|c| c.raw.clone()).collect();
            let stored = store::upsert_chats(&d.pool, &job.workspace, &raw).await?;
            Ok((stored, page.has_more_pages && !page.chats.is_empty()))
        }
    })
    .await?;
    Ok(json!({ "chats": chats, "pages": pages, "truncated": truncated }))
}

/// Reads pages 1, 2, ... with `fetch` (which stores a page and says whether more follow) until
/// the last page or [`MAX_SYNC_PAGES`]. Progress is checkpointed after every page, so a sync cut
/// short (rate limit, timeout, crash) resumes where it stopped instead of starting over and
/// never finishing. Returns pages read, items stored (over all attempts), and whether it stopped
/// at the cap.
async fn sync_pages<F, Fut>(
    d: &Dispatcher,
    job: &Job,
    counted: &str,
    mut fetch: F,
) -> Result<(u32, u64, bool), Failure>
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Result<(u64, bool), Failure>>,
{
    let earlier = job.result.as_ref();
    let mut page = earlier
        .and_then(|r| r.get("next_page"))
        .and_then(Value::as_u64)
        .unwrap_or(1) as u32;
    let mut total = earlier
        .and_then(|r| r.get(counted))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    loop {
        let (stored, more) = fetch(page).await?;
        total += stored;
        if !more {
            return Ok((page, total, false));
        }
        if page >= MAX_SYNC_PAGES {
            return Ok((page, total, true));
        }
        page += 1;
        d.checkpoint(job, &json!({ "next_page": page, counted: total }))
            .await?;
    }
}

#[derive(Debug, Deserialize)]
struct ChatMessagesPayload {
    #[serde(flatten)]
    chat: ChatRef,
    after: Option<String>,
    before: Option<String>,
    after_message: Option<String>,
    before_message: Option<String>,
}

/// `sync_chat_messages`: a chat's history, page by page, into `timelines.messages`.
pub async fn sync_chat_messages(d: &Dispatcher, job: &Job) -> Attempt {
    let p: ChatMessagesPayload = payload(job)?;
    let (client, chat_id) = d.addressed(job, &p.chat).await?;
    let mut query = MessageQuery {
        after: parse_time("after", p.after.as_deref())?,
        before: parse_time("before", p.before.as_deref())?,
        after_message: p.after_message,
        before_message: p.before_message,
        ..MessageQuery::default()
    };
    let (pages, messages, truncated) = sync_pages(d, job, "messages", |page| {
        query.page = Some(page);
        let (client, query) = (client.clone(), query.clone());
        async move {
            let page = client.chat_messages(chat_id, &query).await?;
            let raw: Vec<Value> = page.messages.iter().map(|m| m.raw.clone()).collect();
            let stored =
                store::upsert_messages(&d.pool, &job.workspace, Some(chat_id), &raw, None).await?;
            Ok((stored, page.has_more_pages && !page.messages.is_empty()))
        }
    })
    .await?;
    Ok(json!({ "chat_id": chat_id, "messages": messages, "pages": pages, "truncated": truncated }))
}

/// `sync_teammates`: into `timelines.teammates`.
pub async fn sync_teammates(d: &Dispatcher, job: &Job) -> Attempt {
    let teammates = d.client(job)?.teammates().await?;
    let raw: Vec<Value> = teammates.iter().map(|t| t.raw.clone()).collect();
    let n = store::upsert_teammates(&d.pool, &job.workspace, &raw).await?;
    Ok(json!({ "teammates": n }))
}

#[derive(Debug, Deserialize)]
struct FilesPayload {
    filename: Option<String>,
}

/// `sync_files`: into `timelines.files`.
pub async fn sync_files(d: &Dispatcher, job: &Job) -> Attempt {
    let p: FilesPayload = payload(job)?;
    let files = d.client(job)?.list_files(p.filename.as_deref()).await?;
    let raw: Vec<Value> = files.iter().map(|f| f.raw.clone()).collect();
    let n = store::upsert_files(&d.pool, &job.workspace, &raw).await?;
    Ok(json!({ "files": n }))
}

/// `sync_whatsapp_accounts`: into `timelines.whatsapp_accounts`.
pub async fn sync_whatsapp_accounts(d: &Dispatcher, job: &Job) -> Attempt {
    let accounts = d.client(job)?.whatsapp_accounts().await?;
    let raw: Vec<Value> = accounts.iter().map(|a| a.raw.clone()).collect();
    let n = store::upsert_whatsapp_accounts(&d.pool, &job.workspace, &raw).await?;
    Ok(json!({ "whatsapp_accounts": n }))
}

/// `refresh_quota`: a reading of the quotas into `timelines.quota_snapshots`.
pub async fn refresh_quota(d: &Dispatcher, job: &Job) -> Attempt {
    let quotas = d.client(job)?.quotas().await?;
    let id = store::insert_quota_snapshot(&d.pool, &job.workspace, &quotas.raw).await?;
    store::reconcile_quota(&d.pool, &job.workspace, &quotas.raw).await?;
    Ok(json!({
        "snapshot_id": id,
        "api_calls_used": quotas.api_calls_quota.as_ref().map(|q| q.used),
        "api_calls_total": quotas.api_calls_quota.as_ref().map(|q| q.total),
        "messaging_used": quotas.messaging_quota.as_ref().map(|q| q.used),
        "messaging_total": quotas.messaging_quota.as_ref().map(|q| q.total),
    }))
}
