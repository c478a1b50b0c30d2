-- The ledger: which migrations are applied, with the revert SQL each was applied with,
-- so a revert works after a code rollback removed the files. It lives in its own
-- schema, not in `app` (which the Data API may expose), and no API role may read it.
-- Run inside the transaction of a migration's last step; safe to run again.
CREATE SCHEMA IF NOT EXISTS appdb;
REVOKE ALL ON SCHEMA appdb FROM PUBLIC;

CREATE TABLE IF NOT EXISTS appdb.migrations (
    id text PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    revert_sql text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    applied_by text NOT NULL DEFAULT current_user,
    duration_ms bigint NOT NULL
);
REVOKE ALL ON TABLE appdb.migrations FROM PUBLIC;

DO $revoke$
DECLARE
    api_role text;
BEGIN
    FOREACH api_role IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        IF EXISTS (SELECT FROM pg_roles WHERE rolname = api_role) THEN
            EXECUTE format('REVOKE ALL ON SCHEMA appdb FROM %I', api_role);
            EXECUTE format('REVOKE ALL ON TABLE appdb.migrations FROM %I', api_role);
        END IF;
    END LOOP;
END
$revoke$;
