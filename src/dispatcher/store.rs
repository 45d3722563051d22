//! Writes what the API returns into the mirror tables. Objects are passed as the API's JSON and
//! taken apart in SQL, so the typed columns and the whole object (`raw`) come from one source,
//! and a sync page of 50 chats is one statement.

use serde_json::Value;
use sqlx::PgExecutor;

/// Upserts chats (API chat objects, §4.2). Returns how many rows were written.
pub async fn upsert_chats(
    db: impl PgExecutor<'_>,
    workspace: &str,
    chats: &[Value],
) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "INSERT INTO timelines.chats AS t (workspace, chat_id, name, phone, jid, is_group, closed, read,
             labels, whatsapp_account_id, responsible_email, responsible_name, chat_url, created_at_api,
             last_message_at, last_message_uid, raw, synced_at)
         SELECT DISTINCT ON (c->>'id') $1, timelines.api_bigint(c->>'id'), c->>'name', c->>'phone', c->>'jid', timelines.api_bool(c->>'is_group'),
                timelines.api_bool(c->>'closed'), timelines.api_bool(c->>'read'),
                CASE WHEN jsonb_typeof(c->'labels') = 'array'
                     THEN ARRAY(SELECT jsonb_array_elements_text(c->'labels')) END,
                c->>'whatsapp_account_id', c->>'responsible_email', c->>'responsible_name', c->>'chat_url',
                timelines.api_timestamp(c->>'created_timestamp'),
                timelines.api_timestamp(c->>'last_message_timestamp'), c->>'last_message_uid', c, now()
           FROM jsonb_array_elements($2) c
          WHERE (c->>'id') ~ '^[0-9]+$'
         ON CONFLICT (workspace, chat_id) DO UPDATE SET
             name = EXCLUDED.name, phone = coalesce(EXCLUDED.phone, t.phone), jid = coalesce(EXCLUDED.jid, t.jid),
             is_group = EXCLUDED.is_group, closed = EXCLUDED.closed, read = EXCLUDED.read,
             labels = EXCLUDED.labels, whatsapp_account_id = EXCLUDED.whatsapp_account_id,
             responsible_email = EXCLUDED.responsible_email, responsible_name = EXCLUDED.responsible_name,
             chat_url = EXCLUDED.chat_url, created_at_api = EXCLUDED.created_at_api,
             last_message_at = EXCLUDED.last_message_at, last_message_uid = EXCLUDED.last_message_uid,
             raw = EXCLUDED.raw, synced_at = now()",
    )
    .bind(workspace)
    .bind(Value::Array(chats.to_vec()))
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Upserts messages (API message objects, §4.1). `job_id` links messages this service sent.
pub async fn upsert_messages(
    db: impl PgExecutor<'_>,
    workspace: &str,
    chat_id: Option<i64>,
    messages: &[Value],
    job_id: Option<i64>,
) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "INSERT INTO timelines.messages AS t (workspace, message_uid, chat_id, job_id, from_me, message_type,
             text, status, sender_phone, recipient_phone, has_attachment, attachment_filename, sent_at, raw)
         SELECT DISTINCT ON (m->>'uid') $1, m->>'uid',
                coalesce(timelines.api_bigint(m->>'chat_id'), $3),
                $4, timelines.api_bool(m->>'from_me'), m->>'message_type', m->>'text', m->>'status', m->>'sender_phone',
                m->>'recipient_phone', timelines.api_bool(m->>'has_attachment'), m->>'attachment_filename',
                timelines.api_timestamp(m->>'timestamp'), m
           FROM jsonb_array_elements($2) m
          WHERE m->>'uid' IS NOT NULL
         ON CONFLICT (workspace, message_uid) DO UPDATE SET
             chat_id = coalesce(EXCLUDED.chat_id, t.chat_id), job_id = coalesce(t.job_id, EXCLUDED.job_id),
             from_me = coalesce(EXCLUDED.from_me, t.from_me), message_type = coalesce(EXCLUDED.message_type, t.message_type),
             text = coalesce(EXCLUDED.text, t.text), status = timelines.later_status(t.status, EXCLUDED.status),
             sender_phone = coalesce(EXCLUDED.sender_phone, t.sender_phone),
             recipient_phone = coalesce(EXCLUDED.recipient_phone, t.recipient_phone),
             has_attachment = coalesce(EXCLUDED.has_attachment, t.has_attachment),
             attachment_filename = coalesce(EXCLUDED.attachment_filename, t.attachment_filename),
             sent_at = coalesce(EXCLUDED.sent_at, t.sent_at), raw = t.raw || EXCLUDED.raw, updated_at = now()",
    )
    .bind(workspace)
    .bind(Value::Array(messages.to_vec()))
    .bind(chat_id)
    .bind(job_id)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// A message this service just sent; the API answers only its uid.
#[derive(Debug, Clone)]
pub struct SentMessage<'a> {
    /// The API's `message_uid`.
    pub uid: &'a str,
    /// The chat, when known.
    pub chat_id: Option<i64>,
    /// The job that sent it.
    pub job_id: i64,
    /// The text sent, if any.
    pub text: Option<&'a str>,
    /// The recipient's phone, when sent by phone.
    pub phone: Option<&'a str>,
    /// Whether a file went with it.
    pub has_attachment: bool,
    /// `whatsapp`, or `Note` for notes.
    pub message_type: &'a str,
}

/// Records a message this service just sent, linked to its job, and charges its credits.
pub async fn record_sent_message(
    db: impl PgExecutor<'_> + Copy,
    workspace: &str,
    sent: &SentMessage<'_>,
) -> sqlx::Result<()> {
    let message = serde_json::json!({
        "uid": sent.uid,
        "from_me": true,
        "status": "Queued",
        "text": sent.text,
        "recipient_phone": sent.phone,
        "has_attachment": sent.has_attachment,
        "message_type": sent.message_type,
    });
    upsert_messages(db, workspace, sent.chat_id, &[message], Some(sent.job_id)).await?;
    // Messaging credits as the API charges them (§8.4): 1 per message, 2 with text and a file;
    // notes are not WhatsApp messages. Charged once per message, in the monthly ledger.
    let has_text = sent.text.is_some_and(|t| !t.is_empty());
    let credits = match (sent.message_type, has_text && sent.has_attachment) {
        ("Note", _) => 0,
        (_, true) => 2,
        _ => 1,
    };
    sqlx::query(
        "WITH m AS (UPDATE timelines.messages SET credits = $3
                     WHERE workspace = $1 AND message_uid = $2 AND credits = 0 AND $3 > 0
                       -- (a webhook may report the failure before the send is recorded)
                       AND lower(coalesce(status, '')) <> 'failed' RETURNING credits)
         SELECT timelines.count_usage($1, 0, m.credits) FROM m",
    )
    .bind(workspace)
    .bind(sent.uid)
    .bind(credits)
    .execute(db)
    .await?;
    Ok(())
}

/// Records a message's status history (§4.9) and its latest status (never an earlier one: see
/// `timelines.later_status`). `conn` may be inside a caller's transaction.
pub async fn record_status_history(
    conn: &mut sqlx::PgConnection,
    workspace: &str,
    message_uid: &str,
    entries: &[Value],
) -> sqlx::Result<()> {
    sqlx::query(
        "WITH h AS (
             INSERT INTO timelines.message_status_history (workspace, message_uid, status, at, failure_reason)
             SELECT $1, $2, e->>'status', coalesce(timelines.api_timestamp(e->>'timestamp'), now()), e->'failure_reason'
               FROM jsonb_array_elements($3) e
              WHERE e->>'status' IS NOT NULL
             ON CONFLICT DO NOTHING)
         UPDATE timelines.messages SET status = timelines.later_status(messages.status, latest.status), updated_at = now()
           FROM (SELECT e->>'status' AS status FROM jsonb_array_elements($3) WITH ORDINALITY AS x(e, n)
                  WHERE e->>'status' IS NOT NULL
                  -- equal timestamps: the later entry in the API's list wins
                  ORDER BY timelines.api_timestamp(e->>'timestamp') DESC NULLS LAST, n DESC LIMIT 1) latest
          WHERE workspace = $1 AND message_uid = $2",
    )
    .bind(workspace)
    .bind(message_uid)
    .bind(Value::Array(entries.to_vec()))
    .execute(&mut *conn)
    .await?;
    // A failed message gives its credits back (§8.4), once.
    sqlx::query(
        "WITH f AS (UPDATE timelines.messages SET credits_restored = true
                     WHERE workspace = $1 AND message_uid = $2 AND credits > 0 AND NOT credits_restored
                       AND lower(status) = 'failed'
                 RETURNING credits)
         SELECT timelines.count_usage($1, 0, -f.credits) FROM f",
    )
    .bind(workspace)
    .bind(message_uid)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Upserts teammates (§4.5).
pub async fn upsert_teammates(
    db: impl PgExecutor<'_>,
    workspace: &str,
    teammates: &[Value],
) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "INSERT INTO timelines.teammates AS t (workspace, user_id, email, display_name, role, status, raw, synced_at)
         SELECT DISTINCT ON (x->>'user_id') $1, timelines.api_bigint(x->>'user_id'), x->>'email', x->>'display_name', x->>'role', x->>'status', x, now()
           FROM jsonb_array_elements($2) x
          WHERE (x->>'user_id') ~ '^[0-9]+$'
         ON CONFLICT (workspace, user_id) DO UPDATE SET email = EXCLUDED.email,
             display_name = EXCLUDED.display_name, role = EXCLUDED.role, status = EXCLUDED.status,
             raw = EXCLUDED.raw, synced_at = now()",
    )
    .bind(workspace)
    .bind(Value::Array(teammates.to_vec()))
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Upserts uploaded files (§4.3).
pub async fn upsert_files(
    db: impl PgExecutor<'_>,
    workspace: &str,
    files: &[Value],
) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "INSERT INTO timelines.files AS t (workspace, file_uid, filename, size, mimetype, uploaded_by_email,
             uploaded_at, raw, synced_at)
         SELECT DISTINCT ON (f->>'uid') $1, f->>'uid', f->>'filename',
                timelines.api_bigint(f->>'size'), f->>'mimetype',
                f->>'uploaded_by_email', timelines.api_timestamp(f->>'uploaded_at'),
                f - 'temporary_download_url', now()
           FROM jsonb_array_elements($2) f
          WHERE f->>'uid' IS NOT NULL
         ON CONFLICT (workspace, file_uid) DO UPDATE SET filename = EXCLUDED.filename, size = EXCLUDED.size,
             mimetype = EXCLUDED.mimetype, uploaded_by_email = EXCLUDED.uploaded_by_email,
             uploaded_at = EXCLUDED.uploaded_at, raw = EXCLUDED.raw, synced_at = now()",
    )
    .bind(workspace)
    .bind(Value::Array(files.to_vec()))
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Upserts WhatsApp accounts (§4.4).
pub async fn upsert_whatsapp_accounts(
    db: impl PgExecutor<'_>,
    workspace: &str,
    accounts: &[Value],
) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "INSERT INTO timelines.whatsapp_accounts AS t (workspace, account_id, phone, status, account_name,
             owner_name, owner_email, connected_on, raw, synced_at)
         SELECT DISTINCT ON (a->>'id') $1, a->>'id', a->>'phone', a->>'status', a->>'account_name', a->>'owner_name', a->>'owner_email',
                timelines.api_timestamp(a->>'connected_on'), a, now()
           FROM jsonb_array_elements($2) a
          WHERE a->>'id' IS NOT NULL
         ON CONFLICT (workspace, account_id) DO UPDATE SET phone = EXCLUDED.phone, status = EXCLUDED.status,
             account_name = EXCLUDED.account_name, owner_name = EXCLUDED.owner_name,
             owner_email = EXCLUDED.owner_email, connected_on = EXCLUDED.connected_on, raw = EXCLUDED.raw,
             synced_at = now()",
    )
    .bind(workspace)
    .bind(Value::Array(accounts.to_vec()))
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Takes the API's quota figures over into the monthly ledger (`timelines.quota_usage`).
pub async fn reconcile_quota(
    db: impl PgExecutor<'_>,
    workspace: &str,
    quotas: &Value,
) -> sqlx::Result<()> {
    sqlx::query("SELECT timelines.reconcile_quota($1, $2)")
        .bind(workspace)
        .bind(quotas)
        .execute(db)
        .await?;
    Ok(())
}

/// Why a job may not run for lack of quota (`None`: it may), and when its period ends.
pub async fn quota_block(
    db: impl PgExecutor<'_>,
    workspace: &str,
    priority: i32,
    sends: bool,
) -> sqlx::Result<Option<(String, f64)>> {
    sqlx::query_as(
        "SELECT b, greatest(0, extract(epoch FROM (timelines.quota_period($1)).period_end - now()))::float8
           FROM timelines.quota_block($1, $2, $3) b WHERE b IS NOT NULL",
    )
    .bind(workspace)
    .bind(priority)
    .bind(sends)
    .fetch_optional(db)
    .await
}

/// Stores a quota reading (§4.6) and returns its id.
pub async fn insert_quota_snapshot(
    db: impl PgExecutor<'_>,
    workspace: &str,
    quotas: &Value,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO timelines.quota_snapshots (workspace, messaging_total, messaging_used, messaging_period_end,
             api_calls_total, api_calls_used, api_calls_period_end, raw)
         SELECT $1, timelines.api_bigint(q->'messaging_quota'->>'total'), timelines.api_bigint(q->'messaging_quota'->>'used'),
                timelines.api_timestamp(q->'messaging_quota'->>'period_end'),
                timelines.api_bigint(q->'api_calls_quota'->>'total'), timelines.api_bigint(q->'api_calls_quota'->>'used'),
                timelines.api_timestamp(q->'api_calls_quota'->>'period_end'), q
           FROM (SELECT $2::jsonb AS q) s
         RETURNING id",
    )
    .bind(workspace)
    .bind(quotas)
    .fetch_one(db)
    .await
}

/// The chat id of the direct chat with `phone`, if the mirror knows it.
pub async fn chat_id_for_phone(
    db: impl PgExecutor<'_>,
    workspace: &str,
    phone: &str,
) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "SELECT chat_id FROM timelines.chats
          WHERE workspace = $1 AND phone = $2 AND coalesce(is_group, false) = false
          ORDER BY synced_at DESC LIMIT 1",
    )
    .bind(workspace)
    .bind(phone)
    .fetch_optional(db)
    .await
}
