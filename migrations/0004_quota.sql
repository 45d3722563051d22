-- The monthly quota ledger: API calls and messaging credits per workspace and period, counted as
-- the service uses them and reconciled from the API's own figures (refresh_quota).

CREATE TABLE timelines.quota_usage (
    workspace       text NOT NULL,
    period_start    timestamptz NOT NULL,
    period_end      timestamptz NOT NULL,
    api_calls_used  bigint NOT NULL DEFAULT 0,
    api_calls_limit bigint,
    messages_used   bigint NOT NULL DEFAULT 0,
    messages_limit  bigint,          -- unknown until the first quota reading
    reconciled_at   timestamptz,     -- when the API's figures were last taken over
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace, period_start),
    CHECK (period_end > period_start)
);

-- Reserve for urgent jobs: the last `api_call_reserve_percent` of the month's API calls only go
-- to jobs with priority >= `reserve_priority` (from the config).
ALTER TABLE timelines.workspaces
    ADD COLUMN api_call_reserve_percent double precision NOT NULL DEFAULT 5,
    ADD COLUMN reserve_priority integer NOT NULL DEFAULT 10;

-- Credits a sent message used (1, or 2 with text and a file), given back once if it fails.
ALTER TABLE timelines.messages
    ADD COLUMN credits integer NOT NULL DEFAULT 0,
    ADD COLUMN credits_restored boolean NOT NULL DEFAULT false;

-- The ledger row of the period containing `at`: the API's period once a reading gave one, else
-- the calendar month (UTC) with the configured monthly API calls.
CREATE FUNCTION timelines.quota_period(ws text, at timestamptz DEFAULT now())
RETURNS timelines.quota_usage
LANGUAGE plpgsql AS $$
DECLARE
    q timelines.quota_usage;
    month_start timestamptz := date_trunc('month', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
BEGIN
    SELECT * INTO q FROM timelines.quota_usage u
     WHERE u.workspace = ws AND u.period_start <= at AND at < u.period_end
     ORDER BY u.period_start DESC LIMIT 1;
    IF FOUND THEN
        RETURN q;
    END IF;
    INSERT INTO timelines.quota_usage AS u (workspace, period_start, period_end, api_calls_limit)
    SELECT ws, month_start, month_start + interval '1 month', w.monthly_api_calls
      FROM timelines.workspaces w WHERE w.name = ws
    ON CONFLICT (workspace, period_start) DO UPDATE SET updated_at = u.updated_at
    RETURNING * INTO q;
    RETURN q;
END $$;

-- Counts API calls and messaging credits used (negative credits give them back).
CREATE FUNCTION timelines.count_usage(ws text, api_calls integer, credits integer,
                                      at timestamptz DEFAULT now())
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    q timelines.quota_usage := timelines.quota_period(ws, at);
BEGIN
    UPDATE timelines.quota_usage u
       SET api_calls_used = u.api_calls_used + api_calls,
           messages_used = greatest(0, u.messages_used + credits),
           updated_at = now()
     WHERE u.workspace = ws AND u.period_start = q.period_start;
END $$;

-- Why a job of this priority may not run now (NULL: it may). `sends` says whether it needs
-- messaging credits. The reserve keeps the last part of the API calls for urgent jobs.
CREATE FUNCTION timelines.quota_block(ws text, priority integer, sends boolean,
                                      at timestamptz DEFAULT now())
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    q timelines.quota_usage := timelines.quota_period(ws, at);
    w timelines.workspaces;
    usable bigint;
BEGIN
    SELECT * INTO w FROM timelines.workspaces x WHERE x.name = ws;
    IF q.api_calls_limit IS NOT NULL THEN
        usable := CASE WHEN priority >= coalesce(w.reserve_priority, 10) THEN q.api_calls_limit
                       ELSE floor(q.api_calls_limit * (1 - coalesce(w.api_call_reserve_percent, 5) / 100.0)) END;
        IF q.api_calls_used >= usable THEN
            RETURN format('API-call quota: %s of %s used this period (until %s)%s', q.api_calls_used,
                          q.api_calls_limit, q.period_end,
                          CASE WHEN usable < q.api_calls_limit
                               THEN format('; the last %s%% are kept for priority >= %s',
                                           w.api_call_reserve_percent, w.reserve_priority) ELSE '' END);
        END IF;
    END IF;
    IF sends AND q.messages_limit IS NOT NULL AND q.messages_used >= q.messages_limit THEN
        RETURN format('messaging quota: %s of %s credits used this period (until %s)', q.messages_used,
                      q.messages_limit, q.period_end);
    END IF;
    RETURN NULL;
END $$;

-- Takes over the API's own figures from a quota reading (GET /workspace/quotas): its period,
-- its limits, and its counts (which include calls made by other tools with the same token; our
-- count is kept when it is higher, for calls the reading did not see yet).
CREATE FUNCTION timelines.reconcile_quota(ws text, reading jsonb)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    calls jsonb := reading -> 'api_calls_quota';
    msgs jsonb := reading -> 'messaging_quota';
    p_start timestamptz := timelines.api_timestamp(calls ->> 'period_start');
    p_end timestamptz := timelines.api_timestamp(calls ->> 'period_end');
BEGIN
    IF p_start IS NULL OR p_end IS NULL OR p_end <= p_start THEN
        p_start := (timelines.quota_period(ws)).period_start;
        p_end := (timelines.quota_period(ws)).period_end;
    END IF;
    -- A period the API names replaces an overlapping calendar-month guess.
    DELETE FROM timelines.quota_usage u
     WHERE u.workspace = ws AND u.reconciled_at IS NULL AND u.period_start <> p_start
       AND u.period_start < p_end AND p_start < u.period_end;
    INSERT INTO timelines.quota_usage AS u (workspace, period_start, period_end, api_calls_used,
                                            api_calls_limit, messages_used, messages_limit, reconciled_at)
    VALUES (ws, p_start, p_end, coalesce(timelines.api_bigint(calls ->> 'used'), 0),
            timelines.api_bigint(calls ->> 'total'), coalesce(timelines.api_bigint(msgs ->> 'used'), 0),
            timelines.api_bigint(msgs ->> 'total'), now())
    ON CONFLICT (workspace, period_start) DO UPDATE SET
        period_end = EXCLUDED.period_end,
        api_calls_used = greatest(u.api_calls_used, EXCLUDED.api_calls_used),
        api_calls_limit = coalesce(EXCLUDED.api_calls_limit, u.api_calls_limit),
        messages_used = EXCLUDED.messages_used,
        messages_limit = coalesce(EXCLUDED.messages_limit, u.messages_limit),
        reconciled_at = now(), updated_at = now();
    -- Jobs held for quota look again now: the new figures may show room (they are held again
    -- at once if not).
    UPDATE timelines.jobs j SET run_at = now(), updated_at = now()
     WHERE j.workspace = ws AND j.state = 'held' AND j.run_at > now();
END $$;

-- Per workspace: the configured limit, what was used in the last minute, when the next request
-- may go, throttling in the last hour, and the current period of the quota ledger.
CREATE VIEW timelines.rate_limit_status AS
SELECT w.name AS workspace,
       w.rate_limit_per_minute,
       (SELECT count(*) FROM timelines.api_requests r
         WHERE r.workspace = w.name AND r.requested_at > now() - interval '1 minute') AS requests_last_minute,
       GREATEST(coalesce(l.tat, now()), coalesce(l.paused_until, now()), now()) AS next_request_at,
       coalesce(l.paused_until > now(), false) AS paused,
       (SELECT count(*) FROM timelines.throttle_events e
         WHERE e.workspace = w.name AND e.at > now() - interval '1 hour') AS throttle_pauses_last_hour,
       q.api_calls_used, q.api_calls_limit,
       q.api_calls_limit - q.api_calls_used AS api_calls_left,
       q.messages_used, q.messages_limit,
       q.messages_limit - q.messages_used AS messages_left,
       q.period_start, q.period_end, q.reconciled_at
  FROM timelines.workspaces w
  LEFT JOIN timelines.rate_limiter l ON l.workspace = w.name
  LEFT JOIN LATERAL (SELECT * FROM timelines.quota_usage u
                      WHERE u.workspace = w.name AND u.period_start <= now() AND now() < u.period_end
                      ORDER BY u.period_start DESC LIMIT 1) q ON true;
