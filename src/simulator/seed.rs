//! The deterministic seed workspace: 2 WhatsApp accounts, 4 teammates, 60 direct chats and 2
//! groups (62 > 50, so `GET /chats` has two pages), one chat with 120 messages (three pages of
//! history), 2 files and 2 attachment templates. Same ids, uids, names and timestamps on every
//! start.

use std::collections::{BTreeMap, HashMap, VecDeque};

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::SimulatorConfig;
use super::limits::SlidingWindow;
use super::routes_files::{fabricated_size, mime_from_name};
use super::state::{
    Account, Chat, Counters, FileRecord, FileSource, GroupMember, Kind, Message, Reaction,
    Teammate, WorkspaceInfo, World, digits,
};

/// Id of the first seeded chat; the chat with 120 messages.
pub const FIRST_CHAT_ID: i64 = 1_000_001;
/// Direct chats in the seed.
pub const DIRECT_CHATS: i64 = 60;
/// Group chats in the seed.
pub const GROUP_CHATS: i64 = 2;
/// Messages in the first chat.
pub const LONG_CHAT_MESSAGES: usize = 120;

const FIRST_NAMES: &[&str] = &[
    "Ana", "Ben", "Chloe", "David", "Elif", "Farid", "Grace", "Hugo", "Ines", "Jonas",
];
const LAST_NAMES: &[&str] = &["Silva", "Okafor", "Novak", "Tanaka", "Weber", "Haddad"];
const LINES: &[&str] = &[
    "Hi, is the offer still valid?",
    "Yes, until the end of the month.",
    "Can you send the price list?",
    "Sure, sending it now.",
    "Thanks! When can you deliver?",
    "Next Tuesday works for us.",
];

fn at(y: i32, mo: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, 0, 0)
        .single()
        .expect("valid seed date")
}

type SeedAccount = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    (i32, u32, u32),
);

/// WhatsApp accounts: `(digits, account name, owner, owner email, connected on (y, m, d))`.
/// The second is the most recently connected, so it sends when a request names no account.
const ACCOUNTS: &[SeedAccount] = &[
    (
        "14155550100",
        "Acme Sales",
        "Alice Archer",
        "alice@acme.example",
        (2024, 1, 10),
    ),
    (
        "442071838750",
        "Acme Support",
        "Bob Baker",
        "bob@acme.example",
        (2024, 3, 5),
    ),
];

/// Teammates: `(user id, name, email, role, team)`.
const TEAMMATES: &[(i64, &str, &str, &str, Option<&str>)] = &[
    (1001, "Alice Archer", "alice@acme.example", "owner", None),
    (
        1002,
        "Bob Baker",
        "bob@acme.example",
        "admin",
        Some("Support"),
    ),
    (
        1003,
        "Carol Chen",
        "carol@acme.example",
        "teammate",
        Some("Sales"),
    ),
    (
        1004,
        "Dan Diaz",
        "dan@acme.example",
        "agent",
        Some("Support"),
    ),
];

/// Builds the seeded world for `config`.
pub(crate) fn world(config: &SimulatorConfig) -> World {
    let mut rng = StdRng::seed_from_u64(0x5eed_7157);
    let mut uid = move || {
        let bytes = rng.random();
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string()
    };
    let accounts: Vec<Account> = ACCOUNTS
        .iter()
        .map(|&(digits, name, owner, email, (y, m, d))| {
            account(digits, name, owner, email, at(y, m, d, 9))
        })
        .collect();
    let teammates = TEAMMATES
        .iter()
        .map(|&(id, name, email, role, team)| teammate(id, name, email, role, team))
        .collect();
    let files: Vec<FileRecord> = ["price-list.pdf", "catalogue-2025.pdf"]
        .iter()
        .map(|name| seed_file(uid(), name))
        .collect();
    let templates = vec![(101, files[0].uid.clone()), (102, files[1].uid.clone())];
    let mut chats = BTreeMap::new();
    let mut messages = Vec::new();
    for i in 0..DIRECT_CHATS + GROUP_CHATS {
        let (chat, mut history) = if i < DIRECT_CHATS {
            direct_chat(i, &accounts, &mut uid)
        } else {
            group_chat(i - DIRECT_CHATS, &accounts, &mut uid)
        };
        messages.append(&mut history);
        chats.insert(chat.id, chat);
    }
    // Creation order must be chronological: history windows compare positions.
    messages.sort_by_key(|m| (m.created_at, m.chat_id));
    let mut world = World {
        workspace: WorkspaceInfo {
            workspace_id: "acme-inc".to_owned(),
            display_name: "Acme Inc".to_owned(),
            plan: "Business".to_owned(),
            seats_total: 10,
            created_at: at(2024, 1, 1, 8),
        },
        accounts,
        teammates,
        chats,
        messages: Vec::new(),
        message_index: HashMap::new(),
        files,
        webhooks: BTreeMap::new(),
        templates,
        next_chat_id: FIRST_CHAT_ID + DIRECT_CHATS + GROUP_CHATS,
        next_webhook_id: 789_456,
        next_user_id: 1005,
        faults: config.faults.clone(),
        window: SlidingWindow::new(config.rate_limit, config.rate_window),
        api_calls_used: 0,
        sent: Vec::new(),
        deliveries: VecDeque::new(),
        counters: Counters::default(),
    };
    for m in messages {
        world.push_message(m);
    }
    world
}

fn seed_file(uid: String, name: &str) -> FileRecord {
    let url = format!("https://cdn.acme.example/{name}");
    FileRecord {
        uid,
        filename: name.to_owned(),
        size: fabricated_size(&url),
        mimetype: mime_from_name(name).to_owned(),
        uploaded_by_email: "alice@acme.example".to_owned(),
        uploaded_at: at(2024, 12, 1, 10),
        source: FileSource::Url(url),
        listed: true,
    }
}

fn account(digits: &str, name: &str, owner: &str, email: &str, since: DateTime<Utc>) -> Account {
    Account {
        wid: format!("{digits}@s.whatsapp.net"),
        phone: format!("+{digits}"),
        account_name: name.to_owned(),
        owner_name: owner.to_owned(),
        owner_email: email.to_owned(),
        connected_on: since,
    }
}

fn teammate(id: i64, name: &str, email: &str, role: &str, team: Option<&str>) -> Teammate {
    Teammate {
        user_id: id,
        display_name: name.to_owned(),
        email: email.to_owned(),
        role: role.to_owned(),
        team: team.map(str::to_owned),
        invitation_status: None,
        created_at: at(2024, 1, 2, 9),
    }
}

/// Contact `i`'s phone: a mix of US, UK and German numbers.
fn contact_phone(i: i64) -> String {
    match i % 3 {
        0 => format!("+1415555{:04}", 1000 + i),
        1 => format!("+447700{:06}", 900_000 + i),
        _ => format!("+4915112{:06}", 340_000 + i),
    }
}

fn direct_chat(
    i: i64,
    accounts: &[Account],
    uid: &mut impl FnMut() -> String,
) -> (Chat, Vec<Message>) {
    let id = FIRST_CHAT_ID + i;
    let phone = contact_phone(i);
    let name = format!(
        "{} {}",
        FIRST_NAMES[i as usize % FIRST_NAMES.len()],
        LAST_NAMES[i as usize % LAST_NAMES.len()]
    );
    let account = (i % 2) as usize;
    let mut labels = Vec::new();
    if i % 5 == 0 {
        labels.push("vip".to_owned());
    }
    if i % 7 == 0 {
        labels.push("lead".to_owned());
    }
    let responsible = match i % 4 {
        0 => Some("carol@acme.example"),
        1 => Some("bob@acme.example"),
        _ => None,
    };
    let created_at = at(2025, 1, 6, 8) + Duration::hours(i * 5);
    let chat = Chat {
        id,
        name: name.clone(),
        jid: format!("{}@s.whatsapp.net", digits(&phone)),
        is_group: false,
        phone: phone.clone(),
        account,
        closed: i % 11 == 0,
        read: i % 4 != 3,
        unattended: i % 4 == 3,
        labels,
        chatgpt_autoresponse_enabled: i % 13 == 0,
        responsible: responsible.map(str::to_owned),
        created_at,
        last_message: None,
        group_members: Vec::new(),
    };
    let count = if i == 0 {
        LONG_CHAT_MESSAGES
    } else {
        1 + (i as usize % 5)
    };
    let history = direct_history(&chat, &accounts[account], count, uid);
    (chat, history)
}

/// `count` messages alternating contact → team, 7 minutes apart; every third team message
/// got a 👍 from the contact.
fn direct_history(
    chat: &Chat,
    acc: &Account,
    count: usize,
    uid: &mut impl FnMut() -> String,
) -> Vec<Message> {
    let contact = (chat.name.as_str(), chat.phone.as_str());
    let team = (acc.owner_name.as_str(), acc.phone.as_str());
    (0..count)
        .map(|k| {
            let inbound = k % 2 == 0;
            let (sender, recipient) = if inbound {
                (contact, team)
            } else {
                (team, contact)
            };
            let at = chat.created_at + Duration::minutes(7 * k as i64);
            let mut m = seed_message(uid(), chat.id, inbound, at);
            m.text = LINES[k % LINES.len()].to_owned();
            (m.sender_name, m.sender_phone) = (sender.0.to_owned(), sender.1.to_owned());
            (m.recipient_name, m.recipient_phone) =
                (recipient.0.to_owned(), recipient.1.to_owned());
            m.created_by = sender.0.to_owned();
            if !inbound && k % 3 == 1 {
                m.reactions.push(Reaction {
                    name: contact.0.to_owned(),
                    phone: contact.1.to_owned(),
                    emoji: "👍".to_owned(),
                    current: true,
                });
            }
            m
        })
        .collect()
}

fn group_chat(
    g: i64,
    accounts: &[Account],
    uid: &mut impl FnMut() -> String,
) -> (Chat, Vec<Message>) {
    let id = FIRST_CHAT_ID + DIRECT_CHATS + g;
    let account = g as usize % accounts.len();
    let acc = &accounts[account];
    let members = [
        (contact_phone(1), "Ben Okafor"),
        (contact_phone(2), "Chloe Novak"),
    ];
    let created_at = at(2025, 2, 1, 10) + Duration::days(g);
    let mut group_members = vec![GroupMember {
        name: acc.owner_name.clone(),
        phone: acc.phone.clone(),
        role: "admin".to_owned(),
    }];
    group_members.extend(members.iter().map(|(phone, name)| GroupMember {
        name: (*name).to_owned(),
        phone: phone.clone(),
        role: "member".to_owned(),
    }));
    let name = ["Acme Partners", "Support Escalations"][g as usize % 2].to_owned();
    let chat = Chat {
        id,
        name: name.clone(),
        jid: format!("1203630412345678{g:02}@g.us"),
        is_group: true,
        phone: String::new(),
        account,
        closed: false,
        read: true,
        unattended: false,
        labels: vec!["partners".to_owned()],
        chatgpt_autoresponse_enabled: false,
        responsible: None,
        created_at,
        last_message: None,
        group_members,
    };
    let history = (0..3)
        .map(|k| {
            let inbound = k != 1;
            let (sender_name, sender_phone) = if inbound {
                (members[k % 2].1.to_owned(), members[k % 2].0.clone())
            } else {
                (acc.owner_name.clone(), acc.phone.clone())
            };
            let mut m = seed_message(
                uid(),
                id,
                inbound,
                created_at + Duration::minutes(11 * k as i64),
            );
            m.text = format!("Group update #{}", k + 1);
            m.created_by = sender_name.clone();
            (m.sender_name, m.sender_phone) = (sender_name, sender_phone);
            (m.recipient_name, m.recipient_phone) = (name.clone(), String::new());
            m
        })
        .collect();
    (chat, history)
}

fn seed_message(uid: String, chat_id: i64, inbound: bool, created_at: DateTime<Utc>) -> Message {
    Message {
        uid,
        chat_id,
        kind: if inbound {
            Kind::Inbound
        } else {
            Kind::Outbound { fails: false }
        },
        created_at,
        text: String::new(),
        origin: if inbound { "WhatsApp" } else { "TimelinesAI" }.to_owned(),
        sender_name: String::new(),
        sender_phone: String::new(),
        recipient_name: String::new(),
        recipient_phone: String::new(),
        created_by: String::new(),
        attachment: None,
        reply_to: None,
        credits: 0,
        reactions: Vec::new(),
    }
}
