//! `[webhooks]`: the receiver's secret and limits, the subscriptions `webhooks sync` keeps, the
//! processor's pacing, and opt-out by reply.

use serde::Deserialize;

use super::EVENT_TYPES;
use crate::config::{ConfigError, Env, Secret};

/// The subscriptions `webhooks sync` keeps by default: seven of the workspace's ten (§6.1), so
/// three stay free for other tools. `message:new` carries both directions (inbound rules on
/// `message:received:new` or `message:sent:new` match it), `chat:new` every new chat.
pub const DEFAULT_EVENTS: &[&str] = &[
    "message:new",
    "message:reaction",
    "chat:new",
    "chat:responsible:assigned",
    "chat:responsible:unassigned",
    "whatsapp:account:connected",
    "whatsapp:account:disconnected",
];

/// `[webhooks]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// The secret path segment of the receiver URL (`/webhooks/timelines/{secret}`), inline.
    /// Prefer `secret_env`. Without a secret the receiver answers 404 to everything.
    pub secret: Option<Secret>,
    /// Name of an environment variable holding the secret.
    pub secret_env: Option<String>,
    /// Where TimelinesAI reaches this service (`https://sync.example.com`, no trailing slash);
    /// `webhooks sync` subscribes `{public_url}/webhooks/timelines/{secret}?workspace=NAME`.
    pub public_url: Option<String>,
    /// Largest accepted body, in bytes; larger ones are answered 413 and not stored.
    pub max_body_bytes: usize,
    /// Event types `webhooks sync` subscribes per workspace (with those inbound rules need).
    pub events: Vec<String>,
    /// Subscriptions a workspace allows (TimelinesAI: 10, more as a paid add-on); `sync` never
    /// plans more, counting other tools' subscriptions.
    pub max_subscriptions: usize,
    /// An inbound message whose whole text is an opt-out keyword opts its sender out.
    pub opt_out_by_reply: bool,
    /// The opt-out keywords (compared trimmed and case-insensitively).
    pub opt_out_keywords: Vec<String>,
    /// Fallback poll of the processor when no NOTIFY arrives, in milliseconds (jittered ±10 %).
    pub poll_interval_ms: u64,
    /// Attempts at applying an event that fails on a transient database error.
    pub max_attempts: u32,
    /// How long applied (or refused) events are kept, in hours.
    pub retention_hours: u64,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            secret: None,
            secret_env: None,
            public_url: None,
            max_body_bytes: 256 * 1024,
            events: DEFAULT_EVENTS.iter().map(|e| (*e).to_owned()).collect(),
            max_subscriptions: 10,
            opt_out_by_reply: true,
            opt_out_keywords: vec!["STOP".to_owned(), "UNSUBSCRIBE".to_owned()],
            poll_interval_ms: 1000,
            max_attempts: 10,
            retention_hours: 30 * 24,
        }
    }
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: format!("webhooks.{key}"),
        reason: reason.into(),
    }
}

/// Characters a secret may have: they go into a URL path unescaped.
fn url_safe(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~')
}

impl WebhookSettings {
    /// The secret, from `secret` or the variable `secret_env` names.
    pub fn resolved_secret(&self, env: &dyn Env) -> Option<Secret> {
        self.secret.clone().or_else(|| {
            self.secret_env
                .as_deref()
                .and_then(|name| env.var(name))
                .map(Secret::new)
        })
    }

    /// `public_url` without a trailing slash, or an error naming the key.
    pub fn public_url(&self) -> Result<&str, ConfigError> {
        self.public_url
            .as_deref()
            .map(|url| url.trim_end_matches('/'))
            .ok_or_else(|| {
                invalid(
                    "public_url",
                    "required by `webhooks sync`: the URL at which TimelinesAI reaches this \
                     service, e.g. https://sync.example.com",
                )
            })
    }

    /// Checks every key; the secret's value is never part of an error.
    pub fn validate(&self, env: &dyn Env) -> Result<(), ConfigError> {
        if self.secret.is_some() && self.secret_env.is_some() {
            return Err(invalid(
                "secret_env",
                "set either secret or secret_env, not both",
            ));
        }
        if let Some(var) = &self.secret_env
            && env.var(var).is_none()
        {
            return Err(invalid(
                "secret_env",
                format!("environment variable {var} is not set"),
            ));
        }
        let key = if self.secret_env.is_some() {
            "secret_env"
        } else {
            "secret"
        };
        if let Some(secret) = self.resolved_secret(env) {
            let secret = secret.expose();
            if secret.len() < 16 || secret.len() > 200 || !secret.chars().all(url_safe) {
                return Err(invalid(
                    key,
                    "the secret must be 16-200 characters of letters, digits, '-', '_', '.' or \
                     '~' (it is part of the URL); e.g. the output of `openssl rand -hex 24`",
                ));
            }
        }
        if let Some(url) = &self.public_url
            && !((url.starts_with("https://") || url.starts_with("http://")) && url.len() > 10)
        {
            return Err(invalid(
                "public_url",
                format!("must be an http(s) URL such as https://sync.example.com, got {url:?}"),
            ));
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.max_body_bytes) {
            return Err(invalid(
                "max_body_bytes",
                format!(
                    "must be between 1024 and 67108864, got {}",
                    self.max_body_bytes
                ),
            ));
        }
        for (index, event) in self.events.iter().enumerate() {
            if !EVENT_TYPES.contains(&event.as_str()) {
                return Err(invalid(
                    &format!("events[{index}]"),
                    format!(
                        "unknown event type {event:?} (known: {})",
                        EVENT_TYPES.join(", ")
                    ),
                ));
            }
        }
        if !(1..=1000).contains(&self.max_subscriptions) {
            return Err(invalid("max_subscriptions", "must be between 1 and 1000"));
        }
        if self
            .opt_out_keywords
            .iter()
            .any(|k| !k.chars().any(char::is_alphanumeric))
        {
            return Err(invalid(
                "opt_out_keywords",
                "a keyword must have a letter or digit (spaces and punctuation around a reply are \
                 ignored)",
            ));
        }
        if !(10..=600_000).contains(&self.poll_interval_ms) {
            return Err(invalid("poll_interval_ms", "must be between 10 and 600000"));
        }
        if !(1..=1000).contains(&self.max_attempts) {
            return Err(invalid("max_attempts", "must be between 1 and 1000"));
        }
        if !(1..=24 * 3650).contains(&self.retention_hours) {
            return Err(invalid("retention_hours", "must be between 1 and 87600"));
        }
        Ok(())
    }

    /// Whether `text` (an inbound message) is an opt-out keyword: the whole text, in any case,
    /// without the spaces and punctuation around it ("Stop.", "STOP!" opt out; "please stop"
    /// does not).
    pub fn is_opt_out(&self, text: &str) -> bool {
        let bare = |s: &str| {
            s.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        };
        if !self.opt_out_by_reply {
            return false;
        }
        let text = bare(text);
        !text.is_empty() && self.opt_out_keywords.iter().any(|k| bare(k) == text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoEnv;
    impl Env for NoEnv {
        fn var(&self, _: &str) -> Option<String> {
            None
        }
    }

    #[test]
    fn opt_out_keywords_match_trimmed_and_in_any_case() {
        let s = WebhookSettings::default();
        assert!(s.is_opt_out(" stop\n"));
        assert!(s.is_opt_out("Unsubscribe"));
        assert!(!s.is_opt_out("please stop"));
        assert!(s.is_opt_out("Stop."), "punctuation around the keyword");
        assert!(s.is_opt_out("\"STOP!\" "));
        assert!(!s.is_opt_out("stop it"));
        assert!(!s.is_opt_out("?!"));
        let off = WebhookSettings {
            opt_out_by_reply: false,
            ..WebhookSettings::default()
        };
        assert!(!off.is_opt_out("STOP"));
    }

    #[test]
    fn a_short_secret_is_refused_without_being_echoed() {
        let s = WebhookSettings {
            secret: Some(Secret::new("hunter2")),
            ..WebhookSettings::default()
        };
        let err = s.validate(&NoEnv).unwrap_err().to_string();
        assert!(err.contains("webhooks.secret"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn the_default_subscriptions_leave_room_under_the_limit_of_ten() {
        let s = WebhookSettings::default();
        s.validate(&NoEnv).unwrap();
        assert!(s.events.len() <= 10);
    }

    #[test]
    fn an_unknown_event_type_names_its_index() {
        let s = WebhookSettings {
            events: vec!["message:new".into(), "chat:created".into()],
            ..WebhookSettings::default()
        };
        let err = s.validate(&NoEnv).unwrap_err().to_string();
        assert!(
            err.contains("webhooks.events[1]") && err.contains("chat:created"),
            "{err}"
        );
    }
}
