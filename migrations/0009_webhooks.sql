-- Inbound webhooks from TimelinesAI (reference §6): every delivery the receiver accepts is a row
-- here, stored before the 2xx answer (the sender gives 5 seconds) and applied afterwards by the
-- processor loop of any instance.

CREATE TABLE timelines.webhook_events (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The workspace the subscription belongs to (the receiver URL's `?workspace=`).
    workspace        text NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now(),
    -- The payload's `event_type`; NULL when the body has none (or is not JSON).
    event_type       text,
    -- The body as sent, when it is a JSON value Postgres can store.
    payload          jsonb,
    -- The body's bytes when it is not (invalid JSON, or text jsonb refuses such as \u0000).
    body             bytea,
    -- Identifies one event across repeated deliveries (the event type with the message uid, or
    -- a hash of the payload): a second delivery only counts in `deliveries`.
    dedupe_key       text,
    deliveries       integer NOT NULL DEFAULT 1,
    last_delivery_at timestamptz NOT NULL DEFAULT now(),
    -- pending: waits for the processor; processed: applied; ignored: a known type with nothing
    -- to apply (WABA events without a message); malformed: not JSON, or a documented type
    -- missing what it needs; unknown: valid JSON of a type the reference does not list;
    -- failed: applying it failed for good (see error).
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'processed', 'ignored', 'malformed', 'unknown', 'failed')),
    error            text,
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    processed_at     timestamptz,
    -- What it concerned, for joins: the message (timelines.messages) and the jobs its inbound
    -- rules created.
    message_uid      text,
    jobs_created     integer NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX webhook_events_dedupe_idx ON timelines.webhook_events (workspace, dedupe_key)
    WHERE dedupe_key IS NOT NULL;
-- The processor's claim: due pending events in arrival order.
CREATE INDEX webhook_events_pending_idx ON timelines.webhook_events (next_attempt_at, id)
    WHERE status = 'pending';
CREATE INDEX webhook_events_received_idx ON timelines.webhook_events (received_at);
CREATE INDEX webhook_events_message_idx ON timelines.webhook_events (workspace, message_uid)
    WHERE message_uid IS NOT NULL;
COMMENT ON TABLE timelines.webhook_events IS
    'Every webhook delivery from TimelinesAI, stored before it is answered, with how it was applied.';

-- A stored event wakes the processors of every instance (a hint: they also poll).
CREATE FUNCTION timelines.webhook_events_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('timelines_webhooks', '');
    RETURN NULL;
END $$;
CREATE TRIGGER webhook_events_notify AFTER INSERT ON timelines.webhook_events
    FOR EACH STATEMENT EXECUTE FUNCTION timelines.webhook_events_notify();

-- A message's status only moves forward (Queued -> Sent -> Delivered -> Read, or Failed), so a
-- late or repeated report (a webhook arriving after a newer status, the dispatcher recording its
-- send after the webhook) never takes it back. Statuses the reference does not name are opaque
-- and always taken.
CREATE FUNCTION timelines.message_status_rank(status text) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE lower(status) WHEN 'queued' THEN 1 WHEN 'sent' THEN 2 WHEN 'delivered' THEN 3
                              WHEN 'read' THEN 4 WHEN 'failed' THEN 5 ELSE 0 END
$$;

CREATE FUNCTION timelines.later_status(current_status text, incoming text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN incoming IS NULL THEN current_status
                WHEN timelines.message_status_rank(incoming) > 0
                 AND timelines.message_status_rank(current_status) > timelines.message_status_rank(incoming)
                THEN current_status
                ELSE incoming END
$$;
