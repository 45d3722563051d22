-- Database roles (README, "Database roles"). Two NOLOGIN group roles that operators GRANT to
-- login roles:
--
--   timelines_enqueuer  an application that enqueues work: calls timelines.enqueue, cancel and
--                       retry, reads the views, the jobs and what they did; changes no table
--                       directly and reads nothing that could hold a secret.
--   timelines_service   the service itself, so it can run as a role that is neither a superuser
--                       nor the owner of the schema: reads and writes every table of the
--                       schema, runs its functions; creates nothing (migrations are applied by
--                       the owner, `timelines-sync migrate`).
--
-- Roles belong to the cluster, not to a database, and CREATE ROLE needs CREATEROLE. This file
-- therefore creates a role only when it is missing, tolerates another database of the cluster
-- creating it at the same moment, and, when the migrating role may not create roles (a managed
-- Postgres), skips creation with a NOTICE: an administrator creates the two roles and the
-- owner then runs `SELECT timelines.setup_roles()`, which grants what this file would have.
-- Every statement here can run again without effect.

-- ---------------------------------------------------------------------------------------------
-- The writing functions of the SQL API run with their owner's rights, so the enqueuer needs no
-- privilege on any table. Each pins its search_path, so no object of the caller's can stand in
-- for a built-in.
--
-- `timelines.payloads_checked`, which any session may SET, makes the jobs insert trigger skip
-- the payload check (0007, 0008). A caller that set it must not get an unchecked job through a
-- function that inserts on its behalf, so enqueue turns it off around its INSERT and puts the
-- caller's value back afterwards (an error rolls the change back with the transaction). It is
-- done in the body because `ALTER FUNCTION ... SET timelines.payloads_checked` needs a superuser
-- for a custom setting, and the owner on a managed Postgres is not one. cancel and retry never
-- insert (the trigger that checks updates of kind, payload or workspace always runs). The
-- pollers set it for their own transactions and insert directly, which only the owner and
-- timelines_service may do, so their bulk path keeps its speed.
-- ---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION timelines.enqueue(
    kind            text,
    payload         jsonb,
    workspace       text DEFAULT 'default',
    run_at          timestamptz DEFAULT now(),
    priority        integer DEFAULT 0,
    idempotency_key text DEFAULT NULL,
    max_attempts    integer DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    job_id bigint;
    callers_setting text := current_setting('timelines.payloads_checked', true);
BEGIN
    PERFORM set_config('timelines.payloads_checked', 'off', true);
    INSERT INTO timelines.jobs AS j (kind, payload, workspace, run_at, priority, idempotency_key, max_attempts)
    VALUES (enqueue.kind, enqueue.payload, coalesce(enqueue.workspace, 'default'),
            coalesce(enqueue.run_at, now()), coalesce(enqueue.priority, 0), enqueue.idempotency_key,
            coalesce(enqueue.max_attempts, 20))
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING j.id INTO job_id;
    IF job_id IS NULL THEN
        SELECT j.id INTO job_id FROM timelines.jobs j WHERE j.idempotency_key = enqueue.idempotency_key;
    END IF;
    PERFORM set_config('timelines.payloads_checked', coalesce(callers_setting, ''), true);
    RETURN job_id;
END $$;

ALTER FUNCTION timelines.cancel(bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION timelines.retry(bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

-- Functions are executable by PUBLIC by default; these act with the owner's rights, so only
-- the roles granted below (and the owner) may call them.
REVOKE EXECUTE ON FUNCTION timelines.enqueue(text, jsonb, text, timestamptz, integer, text, integer),
                           timelines.cancel(bigint), timelines.retry(bigint) FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------
-- Creating a role, safely from any number of databases at once.
-- ---------------------------------------------------------------------------------------------

-- Creates the NOLOGIN role `role_name` unless it exists. True when the role exists afterwards;
-- false (with a NOTICE) when it is missing and the caller may not create roles. Two databases
-- of one cluster migrating at once both see the role missing: the second CREATE ROLE waits for
-- the first transaction and then fails with unique_violation (or duplicate_object once the
-- first has committed), which means the role is there.
CREATE OR REPLACE FUNCTION timelines.create_role_if_missing(role_name text) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
        RETURN true;
    END IF;
    BEGIN
        EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
    EXCEPTION
        WHEN duplicate_object OR unique_violation THEN
            NULL;
        WHEN insufficient_privilege THEN
            RAISE NOTICE 'role % does not exist and % may not create roles (no CREATEROLE): skipped',
                role_name, current_user
                USING HINT = format('as a role with CREATEROLE run: CREATE ROLE %I NOLOGIN; then, as %I, '
                                    'run: SELECT timelines.setup_roles();', role_name, current_user);
            RETURN false;
    END;
    RETURN true;
END $$;

-- ---------------------------------------------------------------------------------------------
-- The privileges of each role. Run by the migration; run it again (as the owner of the schema,
-- the role that applies migrations) after creating the roles by hand, or to give another pair
-- of roles the same rights (e.g. per database when several share a cluster).
-- ---------------------------------------------------------------------------------------------

-- The tables the enqueuer reads besides the views: the queue, the kinds it accepts, the
-- configured workspaces, and what became of its jobs. None has a column that holds a secret
-- (tokens and webhook secrets are never stored; the request log keeps method and path only).
-- Anything else, contacts and source state included, stays out: a new table is not readable
-- until it is added here.
CREATE OR REPLACE FUNCTION timelines.enqueuer_tables() RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['jobs', 'job_kinds', 'workspaces', 'messages', 'message_status_history',
                 'api_requests']
$$;

-- Creates (when allowed) and grants both roles. True when both exist and hold their rights.
CREATE OR REPLACE FUNCTION timelines.setup_roles(enqueuer text DEFAULT 'timelines_enqueuer',
                                                 service text DEFAULT 'timelines_service')
RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    has_enqueuer boolean := timelines.create_role_if_missing(enqueuer);
    has_service boolean := timelines.create_role_if_missing(service);
    rel record;
BEGIN
    IF has_service THEN
        EXECUTE format('GRANT USAGE ON SCHEMA timelines TO %I', service);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA timelines TO %I', service);
        EXECUTE format('GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA timelines TO %I', service);
        EXECUTE format('GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA timelines TO %I', service);
        EXECUTE format('REVOKE EXECUTE ON FUNCTION timelines.setup_roles(text, text), '
                       'timelines.create_role_if_missing(text) FROM %I', service);
        -- Tables, sequences and functions later migrations create (as this same role).
        EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA timelines '
                       'GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO %I', service);
        EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA timelines '
                       'GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO %I', service);
        EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA timelines '
                       'GRANT EXECUTE ON FUNCTIONS TO %I', service);
        -- The migrations table (`/readyz`, and the start-up check that nothing is pending).
        FOR rel IN SELECT c.oid::regclass AS name, n.nspname
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE c.relname = '_sqlx_migrations' AND c.relkind IN ('r', 'p') LOOP
            EXECUTE format('GRANT SELECT ON %s TO %I', rel.name, service);
            IF NOT has_schema_privilege(service, rel.nspname, 'USAGE') THEN
                EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', rel.nspname, service);
            END IF;
        END LOOP;
    END IF;

    IF has_enqueuer THEN
        EXECUTE format('GRANT USAGE ON SCHEMA timelines TO %I', enqueuer);
        EXECUTE format('GRANT EXECUTE ON FUNCTION '
                       'timelines.enqueue(text, jsonb, text, timestamptz, integer, text, integer), '
                       'timelines.cancel(bigint), timelines.retry(bigint) TO %I', enqueuer);
        FOR rel IN SELECT c.oid::regclass AS name
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname = 'timelines'
                      AND (c.relkind IN ('v', 'm')
                           OR (c.relkind IN ('r', 'p') AND c.relname = ANY (timelines.enqueuer_tables())))
                    ORDER BY c.relname LOOP
            EXECUTE format('GRANT SELECT ON %s TO %I', rel.name, enqueuer);
        END LOOP;
    END IF;
    RETURN has_enqueuer AND has_service;
END $$;

REVOKE EXECUTE ON FUNCTION timelines.setup_roles(text, text), timelines.create_role_if_missing(text)
    FROM PUBLIC;

SELECT timelines.setup_roles();
