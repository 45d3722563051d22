-- Bulk inserts by the pollers: every job a rule creates has the same shape (the rule's payload,
-- string templates, an E.164 phone the poller normalised), and the poller checks that shape once
-- per run against timelines.validate_payload. Re-checking each row cost about a quarter of the
-- insert time of a large import (26 us per row). A transaction that sets
-- `timelines.payloads_checked = on` (SET LOCAL) skips the per-row payload and workspace checks;
-- the state rules below still apply. Anyone able to set it could equally insert a payload the
-- dispatcher then fails with a readable error: it relaxes a convenience check, not a guarantee.
CREATE OR REPLACE FUNCTION timelines.jobs_before_write() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (TG_OP = 'INSERT'
        OR NEW.kind IS DISTINCT FROM OLD.kind
        OR NEW.payload IS DISTINCT FROM OLD.payload
        OR NEW.workspace IS DISTINCT FROM OLD.workspace)
       AND NOT (TG_OP = 'INSERT'
                AND coalesce(current_setting('timelines.payloads_checked', true), '') = 'on') THEN
        IF NOT EXISTS (SELECT 1 FROM timelines.workspaces w WHERE w.name = NEW.workspace) THEN
            RAISE EXCEPTION 'workspace "%" is not configured', NEW.workspace
                USING ERRCODE = 'foreign_key_violation',
                      HINT = 'add [workspaces.' || NEW.workspace || '] to the config file; '
                          || 'configured workspaces are listed in timelines.workspaces';
        END IF;
        PERFORM timelines.validate_payload(NEW.kind, NEW.payload);
    END IF;
    IF TG_OP = 'INSERT' THEN
        NEW.state := coalesce(NEW.state, 'queued');
        IF NEW.state NOT IN ('queued', 'held') THEN
            RAISE EXCEPTION 'a new job must start in state queued or held, not %', NEW.state
                USING ERRCODE = 'check_violation';
        END IF;
        NEW.attempts := 0;
    ELSE
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END $$;
