-- The ledger: which migrations are applied, with the revert SQL each was applied with,
-- so a revert works after a code rollback removed the files. It lives in its own
-- schema, not in `app` (which the Data API may expose), and only its owner may use it.
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

-- Only the owner (the deploy login running this) holds privileges here: a role that can
-- write the ledger can change a revert, which runs with the deploy login's rights. Default
-- privileges may have granted some at creation; take back whatever anyone else holds.
DO $private$
DECLARE
    holder text;
BEGIN
    FOR holder IN
        SELECT DISTINCT pg_get_userbyid(e.grantee)
        FROM pg_namespace AS n, aclexplode(n.nspacl) AS e
        WHERE n.nspname = 'appdb' AND e.grantee NOT IN (0, n.nspowner)
        UNION
        SELECT pg_get_userbyid(e.grantee)
        FROM pg_class AS c, aclexplode(c.relacl) AS e
        WHERE c.oid = 'appdb.migrations'::regclass AND e.grantee NOT IN (0, c.relowner)
    LOOP
        EXECUTE format('REVOKE ALL ON SCHEMA appdb FROM %I', holder);
        EXECUTE format('REVOKE ALL ON TABLE appdb.migrations FROM %I', holder);
    END LOOP;
END
$private$;
