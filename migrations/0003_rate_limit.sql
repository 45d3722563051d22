-- The rate limiter shared by every worker of a workspace: one GCRA row per workspace. Each
-- request reserves the next free slot (theoretical arrival time `tat`), spaced `period` apart,
-- under the row lock, with times from the database clock, so any number of processes share one
-- spacing. A crash wastes at most the slots it had reserved.

CREATE TABLE timelines.rate_limiter (
    workspace    text PRIMARY KEY,
    tat          timestamptz NOT NULL DEFAULT '-infinity',  -- the next free slot
    paused_until timestamptz NOT NULL DEFAULT '-infinity',  -- after a 429: nothing before this
    period       interval,                                  -- spacing last used
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Every time the API said "too many requests" and the workspace was paused.
CREATE TABLE timelines.throttle_events (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace           text NOT NULL,
    at                  timestamptz NOT NULL DEFAULT now(),
    retry_after_seconds double precision,   -- what the API asked for; null if it said nothing
    paused_until        timestamptz NOT NULL
);
CREATE INDEX throttle_events_workspace_idx ON timelines.throttle_events (workspace, at);

-- Reserves the next request slot of a workspace and returns when the request may be sent. If
-- that is more than `max_wait` away (the workspace is paused after a 429, or many workers queue
-- up), nothing is reserved and the time is returned all the same: the caller puts its job aside
-- until then instead of holding a slot it would sit on. `at` is injectable for tests; the
-- service uses the database clock.
CREATE FUNCTION timelines.reserve_request(workspace text, period interval,
                                          max_wait interval DEFAULT '30 seconds',
                                          at timestamptz DEFAULT clock_timestamp())
RETURNS timestamptz
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    r timelines.rate_limiter;
    send_at timestamptz;
BEGIN
    INSERT INTO timelines.rate_limiter AS l (workspace) VALUES (workspace) ON CONFLICT DO NOTHING;
    SELECT * INTO r FROM timelines.rate_limiter l WHERE l.workspace = reserve_request.workspace FOR UPDATE;
    send_at := GREATEST(r.tat, at, r.paused_until);
    IF send_at - at <= max_wait THEN
        UPDATE timelines.rate_limiter l SET tat = send_at + period, period = reserve_request.period,
                                            updated_at = at
         WHERE l.workspace = reserve_request.workspace;
        -- every reserved slot is a request made: count it in the monthly ledger (0004_quota.sql)
        PERFORM timelines.count_usage(reserve_request.workspace, 1, 0, at);
    END IF;
    RETURN send_at;
END $$;

-- Pauses every worker of a workspace until `until` (a 429 or a throttling 403). Without a
-- Retry-After the caller passes null and the pause doubles with each throttle of the last five
-- minutes: 5 s, 10 s, 20 s, ... at most 2 minutes. Returns the end of the pause.
CREATE FUNCTION timelines.pause_requests(workspace text, retry_after_seconds double precision,
                                         at timestamptz DEFAULT clock_timestamp())
RETURNS timestamptz
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    recent integer;
    pause_end timestamptz;
BEGIN
    SELECT count(*) INTO recent FROM timelines.throttle_events e
     WHERE e.workspace = pause_requests.workspace AND e.at > pause_requests.at - interval '5 minutes';
    pause_end := pause_requests.at + make_interval(secs => coalesce(pause_requests.retry_after_seconds,
                                                                    least(120, 5 * 2 ^ least(recent, 5))));
    INSERT INTO timelines.rate_limiter AS l (workspace, paused_until, updated_at)
    VALUES (pause_requests.workspace, pause_end, pause_requests.at)
    ON CONFLICT (workspace) DO UPDATE SET paused_until = GREATEST(l.paused_until, pause_end),
                                          updated_at = pause_requests.at;
    INSERT INTO timelines.throttle_events (workspace, at, retry_after_seconds, paused_until)
    VALUES (pause_requests.workspace, pause_requests.at, pause_requests.retry_after_seconds, pause_end);
    RETURN pause_end;
END $$;

