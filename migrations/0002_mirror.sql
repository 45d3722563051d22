-- What the dispatcher learns from the TimelinesAI API, mirrored into tables users query, and a
-- log of every request it makes. Each mirrored row keeps the API's object whole in `raw` (jsonb)
-- beside the typed columns, so nothing the API returns is lost when it adds fields.

CREATE TABLE timelines.chats (
    workspace           text NOT NULL,
    chat_id             bigint NOT NULL,
    name                text,
    phone               text,
    jid                 text,
    is_group            boolean,
    closed              boolean,
    read                boolean,
    labels              text[],
    whatsapp_account_id text,
    responsible_email   text,
    responsible_name    text,
    chat_url            text,
    created_at_api      timestamptz,
    last_message_at     timestamptz,
    last_message_uid    text,
    raw                 jsonb NOT NULL DEFAULT '{}',
    synced_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace, chat_id)
);
-- Resolving `phone` to a chat id (send jobs, labels, notes) looks here before asking the API.
CREATE INDEX chats_phone_idx ON timelines.chats (workspace, phone) WHERE phone IS NOT NULL;

CREATE TABLE timelines.messages (
    workspace           text NOT NULL,
    message_uid         text NOT NULL,
    chat_id             bigint,
    job_id              bigint,          -- the job that sent it (null for synced history)
    from_me             boolean,
    message_type        text,
    text                text,
    status              text,
    sender_phone        text,
    recipient_phone     text,
    has_attachment      boolean,
    attachment_filename text,
    sent_at             timestamptz,     -- the API's `timestamp`
    raw                 jsonb NOT NULL DEFAULT '{}',
    first_seen_at       timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace, message_uid)
);
CREATE INDEX messages_chat_idx ON timelines.messages (workspace, chat_id, sent_at);
CREATE INDEX messages_job_idx ON timelines.messages (job_id) WHERE job_id IS NOT NULL;

CREATE TABLE timelines.message_status_history (
    workspace      text NOT NULL,
    message_uid    text NOT NULL,
    status         text NOT NULL,
    at             timestamptz NOT NULL,
    failure_reason jsonb,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace, message_uid, status, at)
);

CREATE TABLE timelines.teammates (
    workspace    text NOT NULL,
    user_id      bigint NOT NULL,
    email        text,
    display_name text,
    role         text,
    status       text,
    raw          jsonb NOT NULL DEFAULT '{}',
    synced_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace, user_id)
);

CREATE TABLE timelines.files (
    workspace         text NOT NULL,
    file_uid          text NOT NULL,
    filename          text,
    size              bigint,
    mimetype          text,
    uploaded_by_email text,
    uploaded_at       timestamptz,
    raw               jsonb NOT NULL DEFAULT '{}',
    synced_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace, file_uid)
);

CREATE TABLE timelines.whatsapp_accounts (
    workspace    text NOT NULL,
    account_id   text NOT NULL,          -- the account's JID, e.g. 972540000001@s.whatsapp.net
    phone        text,
    status       text,
    account_name text,
    owner_name   text,
    owner_email  text,
    connected_on timestamptz,
    raw          jsonb NOT NULL DEFAULT '{}',
    synced_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace, account_id)
);

CREATE TABLE timelines.quota_snapshots (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace            text NOT NULL,
    taken_at             timestamptz NOT NULL DEFAULT now(),
    messaging_total      bigint,
    messaging_used       bigint,
    messaging_period_end timestamptz,
    api_calls_total      bigint,
    api_calls_used       bigint,
    api_calls_period_end timestamptz,
    raw                  jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX quota_snapshots_workspace_idx ON timelines.quota_snapshots (workspace, taken_at DESC);

-- Every request the service makes to the API (the API itself keeps only the last 1,000). Never
-- the token and never message bodies: method, path, outcome and timing.
CREATE TABLE timelines.api_requests (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace    text NOT NULL,
    job_id       bigint,
    method       text NOT NULL,
    path         text NOT NULL,
    status       integer,                -- null when no answer arrived
    error_class  text,                   -- rate_limited, quota_exhausted, auth, not_found,
                                         -- invalid_request, transient, ambiguous; null on success
    duration_ms  double precision NOT NULL,
    requested_at timestamptz NOT NULL
);
CREATE INDEX api_requests_time_idx ON timelines.api_requests (requested_at);
CREATE INDEX api_requests_job_idx ON timelines.api_requests (job_id) WHERE job_id IS NOT NULL;

-- The API's timestamps look like "2023-06-18 15:19:23 +0300" (not RFC 3339, §2.5 of the
-- reference), which Postgres reads as is; RFC 3339 works too. Unreadable input gives NULL rather
-- than failing a whole sync page.
CREATE FUNCTION timelines.api_timestamp(value text) RETURNS timestamptz
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN value::timestamptz;
EXCEPTION WHEN others THEN
    RETURN NULL;
END $$;

-- True for a workspace that has no API token and runs against the built-in simulator (the
-- zero-config demo): nothing it "sends" reaches WhatsApp.
ALTER TABLE timelines.workspaces ADD COLUMN simulated boolean NOT NULL DEFAULT false;

-- Lenient casts for API data: a value of an unexpected shape ("", "unlimited", 200000.0) becomes
-- NULL (or is rounded) instead of failing the statement, and with it a whole sync page.
CREATE FUNCTION timelines.api_bigint(value text) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN value ~ '^-?[0-9]{1,18}$' THEN value::bigint
                WHEN value ~ '^-?[0-9]{1,18}\.[0-9]+$' THEN round(value::numeric)::bigint END
$$;

CREATE FUNCTION timelines.api_bool(value text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE lower(value) WHEN 'true' THEN true WHEN 'false' THEN false
                             WHEN '1' THEN true WHEN '0' THEN false END
$$;
