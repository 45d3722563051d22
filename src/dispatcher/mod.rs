//! The dispatcher: the queue [`Handler`] that turns each job kind into TimelinesAI calls,
//! mirrors what they return into SQL, and maps failures to outcomes ([`classify`]).
//!
//! - [`sends`]: kinds that create something (messages, files, voice notes, notes), with the
//!   duplicate check an interrupted or ambiguous earlier attempt requires;
//! - [`reads`]: chat updates, labels, reactions and the read/sync kinds;
//! - [`store`]: upserts into the mirror tables; [`request_log`]: `timelines.api_requests`.

pub mod classify;
pub mod reads;
pub mod request_log;
pub mod sends;
pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::PgPool;

use crate::queue::{Handler, Job, NoopHandler, Outcome};
use crate::timelines::{ApiError, ChatFilter, Client, ErrorClass, RequestTag};

/// How long a job addressed to a phone without a chat waits before looking again.
const NO_CHAT_RECHECK: Duration = Duration::from_secs(30);

/// The kinds the dispatcher runs (every kind of `timelines.job_kinds`).
pub const KINDS: &[&str] = &[
    "send_message",
    "send_file",
    "send_voice",
    "upload_file",
    "add_labels",
    "add_note",
    "update_chat",
    "set_reaction",
    "refresh_message",
    "sync_chats",
    "sync_chat_messages",
    "sync_teammates",
    "sync_files",
    "sync_whatsapp_accounts",
    "refresh_quota",
    "noop",
];

/// Why an attempt stopped: an API failure (classified) or something else.
#[derive(Debug)]
pub enum Failure {
    /// The API call failed.
    Api(ApiError),
    /// The job can never succeed as written (a bad payload, an unknown chat for a phone).
    Permanent(String),
    /// Worth another attempt (the database, a download of the job's file).
    Retry(String),
    /// The outcome is already decided (e.g. by the duplicate check).
    Outcome(Outcome),
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
        Failure::Api(error)
    }
}

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Self {
        Failure::Retry(format!("database: {error}"))
    }
}

/// What a kind's handler returns: the job's result, or why it stopped.
pub type Attempt = Result<Value, Failure>;

/// Runs API jobs for the configured workspaces.
pub struct Dispatcher {
    pool: PgPool,
    clients: HashMap<String, Client>,
    /// Direct chats by (workspace, phone): every phone-addressed job needs one, and the lookup
    /// costs an API call; the mirror table backs this cache across restarts.
    chats: Mutex<HashMap<(String, String), i64>>,
    /// Downloads the job's own files (send_voice's audio_url); never carries the API token.
    downloads: reqwest::Client,
}

impl Dispatcher {
    /// A dispatcher over `clients` (one per workspace name).
    pub fn new(pool: PgPool, clients: HashMap<String, Client>) -> Arc<Self> {
        let downloads = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("a plain HTTP client always builds");
        Arc::new(Self {
            pool,
            clients,
            chats: Mutex::default(),
            downloads,
        })
    }

    /// The client for `job`'s workspace, tagged with the job for the request log.
    fn client(&self, job: &Job) -> Result<Client, Failure> {
        let client = self.clients.get(&job.workspace).ok_or_else(|| {
            Failure::Permanent(format!(
                "workspace {:?} has no API client configured",
                job.workspace
            ))
        })?;
        Ok(client.tagged(RequestTag {
            workspace: job.workspace.clone(),
            job_id: Some(job.id),
        }))
    }

    /// The direct chat with `phone` if the cache or the mirror table knows it (no API call).
    pub async fn known_chat_for_phone(
        &self,
        workspace: &str,
        phone: &str,
    ) -> Result<Option<i64>, Failure> {
        let key = (workspace.to_owned(), phone.to_owned());
        if let Some(id) = self.chats.lock().expect("chat cache lock").get(&key) {
            return Ok(Some(*id));
        }
        Ok(store::chat_id_for_phone(&self.pool, workspace, phone).await?)
    }

    /// The direct chat with `phone`: from the cache, the mirror table, or `GET /chats?phone=`.
    /// `None` when the workspace has no chat with that phone.
    pub async fn chat_for_phone(
        &self,
        client: &Client,
        workspace: &str,
        phone: &str,
    ) -> Result<Option<i64>, Failure> {
        let key = (workspace.to_owned(), phone.to_owned());
        let mut found = self.known_chat_for_phone(workspace, phone).await?;
        if found.is_none() {
            let filter = ChatFilter {
                phone: Some(phone.to_owned()),
                ..ChatFilter::default()
            };
            let page = client.list_chats(&filter).await?;
            let direct: Vec<Value> = page
                .chats
                .iter()
                .filter(|c| c.is_group != Some(true))
                .map(|c| c.raw.clone())
                .collect();
            store::upsert_chats(&self.pool, workspace, &direct).await?;
            found = page
                .chats
                .iter()
                .find(|c| c.is_group != Some(true))
                .map(|c| c.id);
        }
        if let Some(id) = found {
            self.chats.lock().expect("chat cache lock").insert(key, id);
        }
        Ok(found)
    }

    /// The job's client and the chat it addresses: its `chat_id`, or the direct chat with its
    /// `phone`.
    async fn addressed(&self, job: &Job, chat: &ChatRef) -> Result<(Client, i64), Failure> {
        let client = self.client(job)?;
        if let Some(id) = chat.chat_id.as_ref().and_then(sends::IdValue::get) {
            return Ok((client, id));
        }
        let phone = chat
            .phone
            .as_deref()
            .ok_or_else(|| Failure::Permanent("\"chat_id\" or \"phone\" is required".into()))?;
        // No chat yet: often the job's own first message is still queued or rate-limited, so
        // look again later; after max_attempts the job fails with this reason.
        let id = self
            .chat_for_phone(&client, &job.workspace, phone)
            .await?
            .ok_or_else(|| {
                Failure::Outcome(Outcome::Retry {
                    error: format!(
                        "no chat with {phone} exists in the workspace yet (send it a message first)"
                    ),
                    delay: Some(NO_CHAT_RECHECK),
                })
            })?;
        Ok((client, id))
    }

    /// Records progress of this attempt in `jobs.result` for a later attempt.
    async fn checkpoint(&self, job: &Job, progress: &Value) -> Result<(), Failure> {
        crate::db::queue::checkpoint(&self.pool, job.id, job.attempts, progress).await?;
        Ok(())
    }

    async fn run(&self, job: &Job) -> Attempt {
        match job.kind.as_str() {
            "send_message" => sends::send_message(self, job).await,
            "send_file" => sends::send_file(self, job).await,
            "send_voice" => sends::send_voice(self, job).await,
            "upload_file" => sends::upload_file(self, job).await,
            "add_note" => sends::add_note(self, job).await,
            "add_labels" => reads::add_labels(self, job).await,
            "update_chat" => reads::update_chat(self, job).await,
            "set_reaction" => reads::set_reaction(self, job).await,
            "refresh_message" => reads::refresh_message(self, job).await,
            "sync_chats" => reads::sync_chats(self, job).await,
            "sync_chat_messages" => reads::sync_chat_messages(self, job).await,
            "sync_teammates" => reads::sync_teammates(self, job).await,
            "sync_files" => reads::sync_files(self, job).await,
            "sync_whatsapp_accounts" => reads::sync_whatsapp_accounts(self, job).await,
            "refresh_quota" => reads::refresh_quota(self, job).await,
            other => Err(Failure::Permanent(format!(
                "the dispatcher has no handler for kind {other:?}"
            ))),
        }
    }
}

/// The `chat_id` / `phone` pair by which most kinds name a chat (flattened into their payloads).
#[derive(Debug, serde::Deserialize)]
pub struct ChatRef {
    chat_id: Option<sends::IdValue>,
    phone: Option<String>,
}

/// Parses a job's payload into the kind's payload type. The database validated it at insert
/// time; a mismatch here means it was changed since, and fails the job with the reason.
pub fn payload<T: DeserializeOwned>(job: &Job) -> Result<T, Failure> {
    serde_json::from_value(job.payload.clone())
        .map_err(|e| Failure::Permanent(format!("{}: invalid payload: {e}", job.kind)))
}

/// Whether a kind creates something on each call (and so must not be repeated blindly).
fn effect_of(kind: &str) -> classify::Effect {
    match kind {
        "send_message" | "send_file" | "send_voice" | "add_note" => classify::Effect::Creates,
        _ => classify::Effect::Repeatable,
    }
}

impl Handler for Dispatcher {
    fn kinds(&self) -> Vec<String> {
        KINDS.iter().map(|k| k.to_string()).collect()
    }

    fn workspaces(&self) -> Option<Vec<String>> {
        Some(self.clients.keys().cloned().collect())
    }

    async fn handle(&self, job: Job) -> Outcome {
        if job.kind == "noop" {
            return NoopHandler::default().handle(job).await;
        }
        // A quota reading always runs: it is how a held workspace learns it has room again.
        if job.kind != "refresh_quota" {
            let sends = matches!(
                job.kind.as_str(),
                "send_message" | "send_file" | "send_voice"
            );
            match store::quota_block(&self.pool, &job.workspace, job.priority, sends).await {
                Ok(Some((reason, period_left))) => {
                    let recheck = Duration::from_secs_f64(period_left)
                        .clamp(Duration::from_secs(1), classify::QUOTA_RECHECK);
                    return Outcome::Hold {
                        reason,
                        recheck_after: recheck,
                    };
                }
                Ok(None) => {}
                Err(error) => return Outcome::retry(format!("database: {error}")),
            }
        }
        match self.run(&job).await {
            Ok(result) => Outcome::Done(Some(result)),
            Err(Failure::Api(error)) => {
                if error.class == ErrorClass::Auth {
                    tracing::error!(workspace = %job.workspace, "the API refused the workspace's token (401)");
                }
                classify::outcome_for(&error, effect_of(&job.kind))
            }
            Err(Failure::Permanent(reason)) => Outcome::Fail(reason),
            Err(Failure::Retry(reason)) => Outcome::retry(reason),
            Err(Failure::Outcome(outcome)) => outcome,
        }
    }
}
