-- Pollers: per-source incremental state, one row per run, skipped records, the contacts found,
-- opt-outs, and one row per rule event (the dedupe and frequency-cap ledger).

CREATE TABLE timelines.source_state (
    source          text PRIMARY KEY,
    -- The highest record modification time processed: the next run reads from
    -- cursor_value - lookback (inclusive) and skips boundary_ids at exactly cursor_value.
    cursor_value    timestamptz NOT NULL,
    -- Where the source started (its `initial` point): lookback never reads before it, so a new
    -- source does not message contacts changed before it was set up. `backfill` goes further back.
    start_from      timestamptz NOT NULL,
    boundary_ids    text[] NOT NULL DEFAULT '{}',
    -- An opaque vendor cursor for sources that page by token across runs.
    vendor_token    text,
    -- The last cron tick a run was started for: one run per tick across all instances.
    last_tick       timestamptz,
    last_run_id     bigint,
    last_success_at timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE timelines.source_state IS
    'Incremental state per source. Delete a row to restart that source from its `initial` point.';

CREATE TABLE timelines.source_runs (
    id              bigserial PRIMARY KEY,
    source          text NOT NULL,
    mode            text NOT NULL CHECK (mode IN ('scheduled', 'manual', 'backfill')),
    instance        text NOT NULL,
    status          text NOT NULL DEFAULT 'running'
                    CHECK (status IN ('running', 'succeeded', 'failed', 'interrupted')),
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    window_from     timestamptz,
    window_to       timestamptz,
    cursor_before   timestamptz,
    cursor_after    timestamptz,
    -- The cron tick a scheduled run was started for.
    tick            timestamptz,
    requests        integer NOT NULL DEFAULT 0,
    pages           integer NOT NULL DEFAULT 0,
    records_seen    integer NOT NULL DEFAULT 0,
    jobs_created    integer NOT NULL DEFAULT 0,
    records_skipped integer NOT NULL DEFAULT 0,
    -- reason => count, e.g. {"invalid_phone": 3, "opted_out": 1}
    skipped         jsonb NOT NULL DEFAULT '{}',
    error           text
);
CREATE INDEX source_runs_source_idx ON timelines.source_runs (source, started_at DESC);
COMMENT ON TABLE timelines.source_runs IS 'One row per poll of a source, with what it read and did.';

CREATE TABLE timelines.source_skips (
    id          bigserial PRIMARY KEY,
    run_id      bigint NOT NULL REFERENCES timelines.source_runs ON DELETE CASCADE,
    source      text NOT NULL,
    external_id text,
    rule        text,
    reason      text NOT NULL,
    detail      text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX source_skips_run_idx ON timelines.source_skips (run_id);
COMMENT ON TABLE timelines.source_skips IS
    'Records (or rule events) a run skipped, with the reason; the first 1,000 per run.';

-- The last values of the fields rules watch, per record, for field_changed / field_equals.
CREATE TABLE timelines.source_records (
    source       text NOT NULL,
    external_id  text NOT NULL,
    cursor_value timestamptz NOT NULL,
    watched      jsonb NOT NULL DEFAULT '{}',
    first_seen   timestamptz NOT NULL DEFAULT now(),
    last_seen    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, external_id)
);

CREATE TABLE timelines.contacts (
    source      text NOT NULL,
    external_id text NOT NULL,
    phone       text NOT NULL,
    name        text,
    fields      jsonb NOT NULL DEFAULT '{}',
    opted_out   boolean NOT NULL DEFAULT false,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, external_id)
);
CREATE INDEX contacts_phone_idx ON timelines.contacts (phone);
-- The opt-out check of every rule event: a small index of the opted-out only.
CREATE INDEX contacts_opted_out_idx ON timelines.contacts (phone) WHERE opted_out;
COMMENT ON TABLE timelines.contacts IS
    'Every record with a usable phone (E.164), per source, with the fields the source mapped.';

CREATE TABLE timelines.opt_outs (
    phone      text PRIMARY KEY,
    reason     text,
    source     text NOT NULL DEFAULT 'sql',
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT opt_outs_phone_must_be_e164 CHECK (phone ~ '^\+[1-9][0-9]{6,14}$')
);
COMMENT ON TABLE timelines.opt_outs IS
    'Phones (E.164, e.g. +14155550123) that get no messages from rules. Fill it with SQL.';

CREATE TABLE timelines.rule_events (
    idempotency_key text PRIMARY KEY,
    source          text NOT NULL,
    rule            text NOT NULL,
    external_id     text NOT NULL,
    phone           text,
    outcome         text NOT NULL CHECK (outcome IN ('enqueued', 'opted_out', 'capped', 'skipped')),
    job_id          bigint,
    messages        boolean NOT NULL DEFAULT false,
    detail          text,
    run_id          bigint,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rule_events_cap_idx ON timelines.rule_events (phone, created_at)
    WHERE outcome = 'enqueued' AND messages;
-- The jobs of a record (cancelled when a later poll sees the record deleted).
CREATE INDEX rule_events_record_idx ON timelines.rule_events (source, external_id)
    WHERE job_id IS NOT NULL;

-- An opt-out takes effect at once: the phone's queued messages are cancelled with the reason.
CREATE FUNCTION timelines.opt_out_cancels_messages() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE timelines.jobs
       SET state = 'cancelled', finished_at = now(), updated_at = now(),
           last_error = 'cancelled: ' || NEW.phone || ' opted out'
                        || coalesce(' (' || NEW.reason || ')', '')
     WHERE state IN ('queued', 'retrying', 'held')
       AND kind IN ('send_message', 'send_file', 'send_voice')
       AND payload->>'phone' = NEW.phone;
    RETURN NEW;
END $$;
CREATE TRIGGER opt_outs_cancel_messages AFTER INSERT ON timelines.opt_outs
    FOR EACH ROW EXECUTE FUNCTION timelines.opt_out_cancels_messages();
COMMENT ON TABLE timelines.rule_events IS
    'One row per (source, record, rule, event): what the rule did. Re-polls find the row and do nothing.';

-- Per source: the state, the last run, and what the runs of the last 24 hours did.
CREATE VIEW timelines.source_status AS
SELECT s.source, s.cursor_value, s.last_success_at, s.last_error,
       r.status AS last_run_status, r.started_at AS last_run_started_at, r.finished_at AS last_run_finished_at,
       (SELECT count(*) FROM timelines.source_runs x
         WHERE x.source = s.source AND x.started_at > now() - interval '24 hours') AS runs_24h,
       (SELECT coalesce(sum(x.records_seen), 0) FROM timelines.source_runs x
         WHERE x.source = s.source AND x.started_at > now() - interval '24 hours') AS records_24h,
       (SELECT coalesce(sum(x.jobs_created), 0) FROM timelines.source_runs x
         WHERE x.source = s.source AND x.started_at > now() - interval '24 hours') AS jobs_24h,
       (SELECT coalesce(sum(x.records_skipped), 0) FROM timelines.source_runs x
         WHERE x.source = s.source AND x.started_at > now() - interval '24 hours') AS skipped_24h
  FROM timelines.source_state s
  LEFT JOIN timelines.source_runs r ON r.id = s.last_run_id;
