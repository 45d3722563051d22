//! The in-memory workspace: accounts, teammates, chats, messages, files, webhooks, and the
//! counters the limits and the inspection endpoints read.
//!
//! Everything lives in one [`World`] behind a `std::sync::Mutex` ([`Sim::world`]). No lock is held
//! across an `.await`; handlers take the lock, compute, and release before answering or posting
//! webhooks.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};

use super::inspect::{SentMessage, WebhookDelivery};
use super::limits::SlidingWindow;
use super::{Faults, SimulatorConfig};

/// State shared by every handler and background task of one simulator.
pub(crate) type Shared = Arc<Sim>;

/// One running simulator: the fixed configuration plus the mutable world.
pub(crate) struct Sim {
    pub config: SimulatorConfig,
    /// `http://ADDR`, for the temporary download URLs the simulator serves itself.
    pub origin: String,
    /// Posts webhooks; 5 s timeout because receivers must answer within 5 s (§6.1).
    pub http: reqwest::Client,
    world: Mutex<World>,
}

impl Sim {
    pub fn new(config: SimulatorConfig, origin: String, world: World) -> Self {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .build()
            .expect("a reqwest client without custom TLS settings always builds");
        Self {
            config,
            origin,
            http,
            world: Mutex::new(world),
        }
    }

    /// Locks the world. A panic while holding the lock leaves consistent data (every mutation is
    /// a single push or field write), so a poisoned lock is simply taken over.
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Everything that changes while the simulator runs.
pub(crate) struct World {
    pub workspace: WorkspaceInfo,
    pub accounts: Vec<Account>,
    pub teammates: Vec<Teammate>,
    pub chats: BTreeMap<i64, Chat>,
    /// All messages in creation order, which is also chronological order (seeds are sorted).
    pub messages: Vec<Message>,
    /// `uid` → index into `messages`.
    pub message_index: HashMap<String, usize>,
    pub files: Vec<FileRecord>,
    pub webhooks: BTreeMap<i64, Webhook>,
    /// Attachment templates that exist in the workspace (`attachment_template_id`, §5.1):
    /// `(id, file uid)`.
    pub templates: Vec<(i64, String)>,
    pub next_chat_id: i64,
    pub next_webhook_id: i64,
    pub next_user_id: i64,
    pub faults: Faults,
    pub window: SlidingWindow,
    pub api_calls_used: u64,
    pub sent: Vec<SentMessage>,
    pub deliveries: VecDeque<WebhookDelivery>,
    pub counters: Counters,
}

/// Request and delivery counters behind [`super::SimStats`].
#[derive(Default)]
pub(crate) struct Counters {
    pub requests_total: u64,
    pub by_status: BTreeMap<u16, u64>,
    pub rate_limited: u64,
    pub faults_injected: u64,
    pub connections_dropped: u64,
    pub webhooks_delivered: u64,
    pub webhook_failures: u64,
}

pub(crate) struct WorkspaceInfo {
    pub workspace_id: String,
    pub display_name: String,
    pub plan: String,
    pub seats_total: u64,
    pub created_at: DateTime<Utc>,
}

pub(crate) struct Account {
    /// WID, `<digits>@s.whatsapp.net` (§4.4).
    pub wid: String,
    pub phone: String,
    pub account_name: String,
    pub owner_name: String,
    pub owner_email: String,
    pub connected_on: DateTime<Utc>,
}

pub(crate) struct Teammate {
    pub user_id: i64,
    pub display_name: String,
    pub email: String,
    pub role: String,
    pub team: Option<String>,
    /// `Some("Pending")` for invited users (#27).
    pub invitation_status: Option<String>,
    pub created_at: DateTime<Utc>,
}

pub(crate) struct GroupMember {
    pub name: String,
    pub phone: String,
    pub role: String,
}

pub(crate) struct Chat {
    pub id: i64,
    pub name: String,
    pub jid: String,
    pub is_group: bool,
    /// E.164 with `+` for direct chats, empty for groups.
    pub phone: String,
    /// Index into `World::accounts` of the owning account.
    pub account: usize,
    pub closed: bool,
    pub read: bool,
    pub unattended: bool,
    pub labels: Vec<String>,
    pub chatgpt_autoresponse_enabled: bool,
    pub responsible: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_message: Option<(String, DateTime<Utc>)>,
    pub group_members: Vec<GroupMember>,
}

/// What kind of entry a message is; decides its status timeline (§5.3).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Sent by the team (API, app or phone). `fails` makes it end in `Failed`.
    Outbound { fails: bool },
    /// Written by the contact.
    Inbound,
    /// A note added with #17 (§5.2).
    Note { is_private: bool },
}

pub(crate) struct Attachment {
    pub file_uid: String,
    pub filename: String,
    pub size: u64,
    pub mimetype: String,
}

pub(crate) struct Reaction {
    pub name: String,
    pub phone: String,
    pub emoji: String,
    pub current: bool,
}

pub(crate) struct Message {
    pub uid: String,
    pub chat_id: i64,
    pub kind: Kind,
    pub created_at: DateTime<Utc>,
    pub text: String,
    pub origin: String,
    pub sender_name: String,
    pub sender_phone: String,
    pub recipient_name: String,
    pub recipient_phone: String,
    pub created_by: String,
    pub attachment: Option<Attachment>,
    pub reply_to: Option<String>,
    /// Messaging credits charged when it was accepted (§8.4); 0 for seeds, inbound and notes.
    pub credits: u64,
    pub reactions: Vec<Reaction>,
}

impl Message {
    pub fn is_from_me(&self) -> bool {
        !matches!(self.kind, Kind::Inbound)
    }
}

/// Where an uploaded file's bytes are.
pub(crate) enum FileSource {
    /// #18: the URL is recorded, never fetched (the network is closed).
    Url(String),
    /// #19 and voice notes: the uploaded bytes, served by the download URL.
    Bytes(Vec<u8>),
}

pub(crate) struct FileRecord {
    pub uid: String,
    pub filename: String,
    pub size: u64,
    pub mimetype: String,
    pub uploaded_by_email: String,
    pub uploaded_at: DateTime<Utc>,
    pub source: FileSource,
    /// Voice notes are stored as files for their download URL but are not workspace uploads,
    /// so #20 does not list them.
    pub listed: bool,
}

pub(crate) struct Webhook {
    pub id: i64,
    pub event_type: String,
    pub url: String,
    pub enabled: bool,
    pub errors_counter: u64,
}

impl World {
    pub fn message(&self, uid: &str) -> Option<&Message> {
        self.message_index.get(uid).map(|&i| &self.messages[i])
    }

    pub fn message_mut(&mut self, uid: &str) -> Option<&mut Message> {
        self.message_index
            .get(uid)
            .copied()
            .map(|i| &mut self.messages[i])
    }

    pub fn file(&self, uid: &str) -> Option<&FileRecord> {
        self.files.iter().find(|f| f.uid == uid)
    }

    pub fn teammate_by_email(&self, email: &str) -> Option<&Teammate> {
        self.teammates
            .iter()
            .find(|t| t.email.eq_ignore_ascii_case(email))
    }

    /// The account used when a send names none: the most recently connected one (§5.1).
    pub fn default_account(&self) -> usize {
        (0..self.accounts.len())
            .max_by_key(|&i| self.accounts[i].connected_on)
            .expect("the seed always has accounts")
    }

    pub fn account_by_phone(&self, phone: &str) -> Option<usize> {
        let wanted = digits(phone);
        self.accounts
            .iter()
            .position(|a| digits(&a.phone) == wanted)
    }

    /// The workspace owner: the caller of the API for reactions and `created_by`.
    pub fn owner(&self) -> &Teammate {
        self.teammates
            .iter()
            .find(|t| t.role == "owner")
            .unwrap_or(&self.teammates[0])
    }

    /// The direct chat of `account` with the contact whose WID digits are `digits`.
    pub fn direct_chat(&self, account: usize, phone_digits: &str) -> Option<i64> {
        self.chats
            .values()
            .find(|c| !c.is_group && c.account == account && digits(&c.phone) == phone_digits)
            .map(|c| c.id)
    }

    /// Appends a message, keeps the index and the chat's last-message fields in step.
    pub fn push_message(&mut self, message: Message) {
        if let Some(chat) = self.chats.get_mut(&message.chat_id) {
            chat.last_message = Some((message.uid.clone(), message.created_at));
        }
        self.message_index
            .insert(message.uid.clone(), self.messages.len());
        self.messages.push(message);
    }
}

/// The digits of a phone number or WID, the form phones are compared in (§9).
pub(crate) fn digits(s: &str) -> String {
    s.split('@')
        .next()
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_digit)
        .collect()
}
