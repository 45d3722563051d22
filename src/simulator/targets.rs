//! Where a send goes: the target forms of #1–#4 (§5.1, §9) resolved to a chat, or to a
//! direct chat still to be created.

use super::reply::{ApiError, FieldError};
use super::state::{World, digits};
use super::validate::check_phone;

/// Which chat a send goes to.
pub(crate) enum Target {
    /// #1: a phone number; the direct chat is created on first send.
    Phone {
        phone: String,
        account_phone: Option<String>,
    },
    /// #2 and #5: an existing chat; the sender is the account owning it (§5.1).
    Chat(i64),
    /// #3: a JID; direct JIDs create the chat like #1, others must exist.
    Jid {
        jid: String,
        account_phone: Option<String>,
    },
    /// #4: the exact chat name (deprecated endpoint).
    ChatName(String),
}

/// Where the message will go: an existing chat, or a direct chat to create.
pub(crate) enum Resolved {
    Existing(i64),
    New { account: usize, phone: String },
}

/// The account named by `whatsapp_account_phone`, else the most recently connected (§5.1).
pub(crate) fn pick_account(world: &World, phone: Option<&str>) -> Result<usize, ApiError> {
    match phone {
        None => Ok(world.default_account()),
        Some(p) => world.account_by_phone(p).ok_or_else(|| {
            ApiError::invalid(FieldError::body(
                "whatsapp_account_phone",
                "no connected WhatsApp account with this phone in the workspace",
            ))
        }),
    }
}

/// The chat `target` names, or the direct chat to create for it.
pub(crate) fn resolve(world: &World, target: &Target) -> Result<Resolved, ApiError> {
    match target {
        Target::Phone {
            phone,
            account_phone,
        } => {
            let account = pick_account(world, account_phone.as_deref())?;
            Ok(match world.direct_chat(account, &digits(phone)) {
                Some(id) => Resolved::Existing(id),
                None => Resolved::New {
                    account,
                    phone: phone.clone(),
                },
            })
        }
        Target::Chat(id) => world
            .chats
            .contains_key(id)
            .then_some(Resolved::Existing(*id))
            .ok_or_else(|| ApiError::not_found("Chat")),
        Target::Jid { jid, account_phone } => {
            let account = pick_account(world, account_phone.as_deref())?;
            resolve_jid(world, jid, account)
        }
        Target::ChatName(name) => world
            .chats
            .values()
            .find(|c| &c.name == name)
            .map(|c| Resolved::Existing(c.id))
            .ok_or_else(|| ApiError::not_found("Chat")),
    }
}

/// Direct JIDs (`@s.whatsapp.net`, legacy `@c.us`) behave like a phone; group, `@lid` and
/// broadcast JIDs must name an existing chat of the account (§9).
fn resolve_jid(world: &World, jid: &str, account: usize) -> Result<Resolved, ApiError> {
    let bad = |msg: &str| ApiError::invalid(FieldError::body("jid", msg));
    let Some((user, domain)) = jid.split_once('@') else {
        return Err(bad(
            "must be a WhatsApp JID such as 14155551234@s.whatsapp.net",
        ));
    };
    match domain {
        "s.whatsapp.net" | "c.us" => {
            let phone = format!("+{user}");
            check_phone(&phone)
                .map_err(|_| bad("the user part must be a phone number in digits"))?;
            Ok(match world.direct_chat(account, user) {
                Some(id) => Resolved::Existing(id),
                None => Resolved::New { account, phone },
            })
        }
        "g.us" | "lid" | "broadcast" => world
            .chats
            .values()
            .find(|c| c.account == account && c.jid == jid)
            .map(|c| Resolved::Existing(c.id))
            .ok_or_else(|| bad("no chat with this JID in the WhatsApp account")),
        _ => Err(bad("unknown JID domain")),
    }
}
