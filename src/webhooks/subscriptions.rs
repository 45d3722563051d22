//! `timelines-sync webhooks sync|list`: the workspace's webhook subscriptions (§4.7, #28–#32)
//! pointing at this service's receiver. A subscription is this service's when its URL starts
//! with `{public_url}/webhooks/timelines/`; others (other tools) are left alone but count
//! towards the workspace's limit (§6.1: 10). `sync` plans every change first and refuses, with
//! nothing changed, a plan over the limit; run again, it changes nothing.

use std::collections::BTreeSet;

use anyhow::Context;
use sqlx::PgPool;

use crate::config::{Env, Secret, Settings};
use crate::limiter::WorkspaceLimiter;
use crate::timelines::{Client, ClientOptions, NewWebhook, Webhook, WebhookUpdate};

/// Event types that a wider subscription already delivers (an inbound rule on one of them is
/// served by a subscription to the other): `message:new` carries both directions, `chat:new`
/// every new chat.
const COVERED_BY: &[(&str, &str)] = &[
    ("message:received:new", "message:new"),
    ("message:sent:new", "message:new"),
    ("chat:incoming:new", "chat:new"),
    ("chat:outgoing:new", "chat:new"),
];

/// What `sync` did to one subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Already right.
    Unchanged,
    /// Created.
    Created,
    /// Its URL, event type or `enabled` was set.
    Updated,
    /// Deleted (an event type no longer wanted).
    Deleted,
}

/// One subscription's line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The subscription's id.
    pub id: String,
    /// Its event type.
    pub event_type: String,
    /// What happened.
    pub change: Change,
}

/// The event types `sync` subscribes: `[webhooks] events`, and those inbound rules react to
/// that these do not deliver.
pub fn wanted_events(settings: &Settings) -> Vec<String> {
    let mut wanted: Vec<String> = settings.webhooks.events.clone();
    let rules: BTreeSet<String> = settings
        .rules
        .iter()
        .filter_map(|r| r.on.as_ref())
        .flat_map(|on| on.to_vec())
        .collect();
    for event in rules {
        let covered = COVERED_BY
            .iter()
            .any(|(narrow, wide)| *narrow == event && wanted.iter().any(|w| w == wide));
        if !covered && !wanted.contains(&event) {
            wanted.push(event);
        }
    }
    let mut seen = BTreeSet::new();
    wanted.retain(|e| seen.insert(e.clone()));
    wanted
}

/// The receiver URL TimelinesAI posts a workspace's events to.
pub fn receiver_url(public_url: &str, secret: &Secret, workspace: &str) -> String {
    format!(
        "{}{}{}?workspace={workspace}",
        public_url.trim_end_matches('/'),
        super::receiver::PATH_PREFIX,
        secret.expose()
    )
}

/// `text` with `secret` replaced, and the path segment after every
/// `/webhooks/timelines/` (a receiver secret: an old one after a rotation, or one this process
/// was not configured with), for printing and errors.
pub fn redact(text: &str, secret: Option<&Secret>) -> String {
    let text = match secret {
        Some(secret) => text.replace(secret.expose(), "[secret]"),
        None => text.to_owned(),
    };
    let prefix = super::receiver::PATH_PREFIX;
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find(prefix) {
        let (head, tail) = rest.split_at(at + prefix.len());
        out.push_str(head);
        let end = tail
            .find(|c: char| matches!(c, '?' | '#' | '/') || c.is_whitespace() || c == '"')
            .unwrap_or(tail.len());
        if end > 0 {
            out.push_str("[secret]");
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Brings one workspace's subscriptions in line with `wanted`, pointing at `url`; a
/// subscription is this service's when its URL starts with `ours_prefix`.
pub async fn sync_workspace(
    client: &Client,
    ours_prefix: &str,
    url: &str,
    wanted: &[String],
    limit: usize,
) -> anyhow::Result<Vec<Line>> {
    let hooks = client
        .list_webhooks()
        .await
        .context("listing the subscriptions")?;
    let (ours, others): (Vec<&Webhook>, Vec<&Webhook>) = hooks
        .iter()
        .partition(|h| h.url.as_deref().is_some_and(|u| u.starts_with(ours_prefix)));
    if others.len() + wanted.len() > limit {
        anyhow::bail!(
            "{} subscriptions are needed ({}) but the workspace has {} of other tools and allows \
             {limit} (TimelinesAI's default is 10 per workspace): remove some in the app, list \
             fewer `webhooks.events`, or raise `webhooks.max_subscriptions` if your plan allows \
             more; nothing was changed",
            wanted.len(),
            wanted.join(", "),
            others.len()
        );
    }
    let mut lines = Vec::new();
    for step in plan(&ours, wanted, url) {
        lines.push(apply(client, step, url).await?);
    }
    Ok(lines)
}

/// One change to make.
enum Step<'a> {
    /// Already right.
    Keep(&'a Webhook, &'a str),
    /// Re-point (and re-type, enable) an existing subscription of ours.
    Update(&'a Webhook, &'a str),
    /// Ours, no longer wanted.
    Delete(&'a Webhook),
    /// A new subscription.
    Create(&'a str),
}

/// The steps, in the order they are made: keeps and updates, deletes (freeing slots), creates.
fn plan<'a>(ours: &[&'a Webhook], wanted: &'a [String], url: &str) -> Vec<Step<'a>> {
    let right = |h: &Webhook, event: &str| {
        h.event_type.as_deref() == Some(event)
            && h.url.as_deref() == Some(url)
            && h.enabled != Some(false)
    };
    // Per wanted type, the best of ours: a right one, else one of that type.
    let mut spare: Vec<&Webhook> = ours.to_vec();
    let mut picks: Vec<(&str, Option<&Webhook>)> = Vec::new();
    for event in wanted {
        let pick = spare.iter().position(|h| right(h, event)).or_else(|| {
            spare
                .iter()
                .position(|h| h.event_type.as_deref() == Some(event.as_str()))
        });
        picks.push((event, pick.map(|i| spare.remove(i))));
    }
    let mut spare = spare.into_iter();
    let (mut steps, mut creates) = (Vec::new(), Vec::new());
    for (event, hook) in picks {
        match hook.or_else(|| spare.next()) {
            Some(h) if right(h, event) => steps.push(Step::Keep(h, event)),
            Some(h) => steps.push(Step::Update(h, event)),
            None => creates.push(Step::Create(event)),
        }
    }
    steps.extend(spare.map(Step::Delete));
    steps.extend(creates);
    steps
}

/// Makes one step.
async fn apply(client: &Client, step: Step<'_>, url: &str) -> anyhow::Result<Line> {
    Ok(match step {
        Step::Keep(h, event) => line(&h.id, event, Change::Unchanged),
        Step::Update(h, event) => {
            let update = WebhookUpdate {
                event_type: Some(event.to_owned()),
                url: Some(url.to_owned()),
                enabled: Some(true),
            };
            client
                .update_webhook(&h.id, &update)
                .await
                .with_context(|| format!("updating subscription {} to {event}", h.id))?;
            line(&h.id, event, Change::Updated)
        }
        Step::Delete(h) => {
            client
                .delete_webhook(&h.id)
                .await
                .with_context(|| format!("deleting subscription {}", h.id))?;
            line(
                &h.id,
                h.event_type.as_deref().unwrap_or(""),
                Change::Deleted,
            )
        }
        Step::Create(event) => {
            let new = NewWebhook {
                event_type: event.to_owned(),
                url: url.to_owned(),
                enabled: Some(true),
            };
            let created = client
                .create_webhook(&new)
                .await
                .with_context(|| format!("subscribing to {event}"))?;
            line(&created.id, event, Change::Created)
        }
    })
}

fn line(id: &str, event: &str, change: Change) -> Line {
    Line {
        id: id.to_owned(),
        event_type: event.to_owned(),
        change,
    }
}

/// The clients of the workspaces that talk to the real API (simulated ones have no lasting
/// subscriptions), paced by the shared limiter in `pool`.
pub fn clients(settings: &Settings, pool: &PgPool) -> anyhow::Result<Vec<(String, Client)>> {
    let simulated = settings.simulated_workspaces();
    let mut clients = Vec::new();
    for (name, ws) in &settings.workspaces {
        if simulated.contains(name) {
            continue;
        }
        let token = ws.resolved_token().with_context(|| {
            format!("config key `workspaces.{name}.token`: workspace {name} has no API token")
        })?;
        let client = Client::new(&ws.api_url, token, ClientOptions::default())
            .with_context(|| format!("workspace {name}"))?
            .with_gate(WorkspaceLimiter::new(
                pool.clone(),
                name,
                ws.rate_limit_per_minute,
            ));
        clients.push((name.clone(), client));
    }
    anyhow::ensure!(
        !clients.is_empty(),
        "every workspace uses the built-in simulator: configure a token (TIMELINES_API_TOKEN or \
         [workspaces.NAME].token) to manage real subscriptions"
    );
    Ok(clients)
}

/// `webhooks sync`: every workspace of `clients`; returns the printed report.
pub async fn sync(
    settings: &Settings,
    env: &dyn Env,
    clients: &[(String, Client)],
) -> anyhow::Result<String> {
    let secret = settings.webhooks.resolved_secret(env).context(
        "config key `webhooks.secret`: no secret configured (set webhooks.secret or \
         webhooks.secret_env); the receiver answers 404 without one",
    )?;
    let public_url = settings.webhooks.public_url()?;
    let prefix = format!("{public_url}{}", super::receiver::PATH_PREFIX);
    let wanted = wanted_events(settings);
    let mut out = String::new();
    for (workspace, client) in clients {
        let url = receiver_url(public_url, &secret, workspace);
        let limit = settings.webhooks.max_subscriptions;
        let lines = sync_workspace(client, &prefix, &url, &wanted, limit)
            .await
            .map_err(|e| anyhow::anyhow!("{}", redact(&format!("{e:#}"), Some(&secret))))
            .with_context(|| format!("workspace {workspace}"))?;
        out.push_str(&format!(
            "workspace {workspace}: {} -> {}\n",
            redact(&url, Some(&secret)),
            summary(&lines)
        ));
        for l in &lines {
            out.push_str(&format!(
                "  {:<10} {:<12} {}\n",
                l.id,
                format!("{:?}", l.change).to_lowercase(),
                l.event_type
            ));
        }
    }
    Ok(out)
}

fn summary(lines: &[Line]) -> String {
    let count = |c: Change| lines.iter().filter(|l| l.change == c).count();
    format!(
        "{} created, {} updated, {} deleted, {} unchanged",
        count(Change::Created),
        count(Change::Updated),
        count(Change::Deleted),
        count(Change::Unchanged)
    )
}

/// `webhooks list`: every subscription of every workspace of `clients`, this service's marked
/// and their secret hidden.
pub async fn list(
    settings: &Settings,
    env: &dyn Env,
    clients: &[(String, Client)],
) -> anyhow::Result<String> {
    let secret = settings.webhooks.resolved_secret(env);
    let hide = |text: &str| redact(text, secret.as_ref());
    let prefix = settings
        .webhooks
        .public_url()
        .ok()
        .map(|u| format!("{u}{}", super::receiver::PATH_PREFIX));
    let mut out = String::new();
    for (workspace, client) in clients {
        let hooks = client
            .list_webhooks()
            .await
            .map_err(|e| anyhow::anyhow!("{}", hide(&e.to_string())))
            .with_context(|| format!("workspace {workspace}: listing the subscriptions"))?;
        out.push_str(&format!(
            "workspace {workspace}: {} subscriptions (limit {})\n",
            hooks.len(),
            settings.webhooks.max_subscriptions
        ));
        for h in &hooks {
            let url = h.url.as_deref().unwrap_or("");
            let ours = prefix.as_deref().is_some_and(|p| url.starts_with(p));
            out.push_str(&format!(
                "  {:<10} {:<28} {:<8} errors {:<4} {}{}\n",
                h.id,
                h.event_type.as_deref().unwrap_or("?"),
                if h.enabled == Some(false) {
                    "disabled"
                } else {
                    "enabled"
                },
                h.errors_counter.unwrap_or(0),
                hide(url),
                if ours { "  (this service)" } else { "" }
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_events_a_wider_subscription_delivers_add_nothing() {
        let settings = Settings::parse(
            "[[rules]]\non = \"message:received:new\"\naction = \"add_note\"\ntemplate = \"x\"\n\
             [[rules]]\non = [\"call:incoming:missed\"]\naction = \"add_note\"\ntemplate = \"y\"\n",
            std::path::Path::new("test.toml"),
        )
        .unwrap();
        let wanted = wanted_events(&settings);
        assert!(!wanted.contains(&"message:received:new".to_owned()));
        assert_eq!(
            wanted.last().map(String::as_str),
            Some("call:incoming:missed")
        );
    }

    #[test]
    fn the_secret_is_hidden_in_printed_urls() {
        let secret = Secret::new("s3cr3t-s3cr3t-s3cr3t");
        let url = receiver_url("https://x.example/", &secret, "default");
        assert_eq!(
            url,
            "https://x.example/webhooks/timelines/s3cr3t-s3cr3t-s3cr3t?workspace=default"
        );
        assert!(!redact(&url, Some(&secret)).contains("s3cr3t"));
        assert_eq!(
            redact(
                "at https://a.example/webhooks/timelines/0ld-s3cret?workspace=x: 404",
                None
            ),
            "at https://a.example/webhooks/timelines/[secret]?workspace=x: 404"
        );
    }
}
