-- Bulk inserts by the pollers, continued (see 0007): a transaction that has checked its jobs'
-- payload shapes (`SET LOCAL timelines.payloads_checked = on`) now skips the per-row trigger
-- altogether instead of entering it to find there is nothing to check. Calling a plpgsql
-- trigger per row cost about 1.4 us a row of a large import. Such inserts must leave `state`
-- and `attempts` to their defaults (queued, 0), which is what the trigger would have set.
-- Changes of kind, payload or workspace are always checked, whatever the setting.
DROP TRIGGER jobs_before_write ON timelines.jobs;

CREATE OR REPLACE FUNCTION timelines.jobs_before_write() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT'
       OR NEW.kind IS DISTINCT FROM OLD.kind
       OR NEW.payload IS DISTINCT FROM OLD.payload
       OR NEW.workspace IS DISTINCT FROM OLD.workspace THEN
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

CREATE TRIGGER jobs_before_insert BEFORE INSERT ON timelines.jobs
    FOR EACH ROW
    WHEN (current_setting('timelines.payloads_checked', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION timelines.jobs_before_write();

CREATE TRIGGER jobs_before_write BEFORE UPDATE OF kind, payload, workspace ON timelines.jobs
    FOR EACH ROW EXECUTE FUNCTION timelines.jobs_before_write();
