-- 030: app.billing_logs, an append-only log of billing actions.
--
-- One row per thing the backend did about money: a checkout started, an invoice paid, a
-- refund, a plan change. Rows are only ever inserted; a correction is a new row.
--
-- Links, filled in where the backend knows them, and what deleting a user does to them:
--   user_id       -> auth.users(id)                ON DELETE SET NULL
--   membership_id -> app.memberships(membership_id) ON DELETE SET NULL
-- Deleting an auth user is never blocked (production's older NO ACTION key blocked it),
-- and billing records outlive the user, because accounting must keep them: the row
-- stays, loses its link to the person, and keeps stripe_customer_id and the Stripe
-- object's id, which tie it to Stripe's own records. CASCADE would destroy the books.
-- Each link has an index, so the SET NULL that a deletion runs needs no table scan.
--
-- Append-only, enforced by a trigger: the Pulumi program grants app_writer and
-- service_role UPDATE and DELETE on every app table (appdb/access.py), and a migration
-- cannot take that back without fighting the program, so the trigger is the honest
-- mechanism, and it holds for every role, service_role and the table owner included.
-- It refuses DELETE, TRUNCATE and every UPDATE but one: an update that only clears
-- user_id and/or membership_id. That is what ON DELETE SET NULL runs when a user or a
-- membership is deleted (a referential action fires the table's row triggers), and
-- forgetting whom a row was about is all anyone may do to it. Dropping the table
-- (030's revert) is not affected; disabling the trigger takes the table's owner.
--
-- Access: row level security is on. app_writer and app_reader reach rows through the
-- policies below; service_role bypasses RLS. authenticated gets NOTHING (appdb/access.py):
-- the backend shows a user their billing history; the log's details are not for the
-- Data API. anon gets nothing.
--
-- Production already has this table from the backend's older migrations (a serial key,
-- user_id -> auth.users with NO ACTION, no membership link, RLS off, a policy for
-- app_reader; tests/states/production_billing.sql). This file converges there without
-- touching a row: it adds the missing columns without a rewrite, replaces the blocking
-- foreign key (found by its column) with the SET NULL one, added NOT VALID and validated
-- in the last step, and leaves the table's own key and policies in place.

-- appdb:step preflight statement_timeout=1h
DO $preflight$
DECLARE
    bad bigint;
BEGIN
    IF to_regclass('auth.users') IS NULL THEN
        RAISE EXCEPTION 'auth.users does not exist: this database is not shaped like Supabase'
            USING ERRCODE = 'AP001',
                  HINT = 'point appdb at a Supabase database, or start one with: appdb local up';
    END IF;
    IF to_regclass('app.memberships') IS NULL THEN
        RAISE EXCEPTION 'app.memberships does not exist: apply 027 first' USING ERRCODE = 'AP001';
    END IF;
    IF to_regclass('app.billing_logs') IS NULL THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_attribute
                   WHERE attrelid = 'app.billing_logs'::regclass AND attname = 'action' AND NOT attisdropped) THEN
        RAISE EXCEPTION 'app.billing_logs exists without the column action; nothing was changed'
            USING ERRCODE = 'AP001',
                  HINT = 'rename or add it in a migration before 030, or pull the table as it is (appdb pull)';
    END IF;
    IF EXISTS (SELECT FROM pg_attribute
               WHERE attrelid = 'app.billing_logs'::regclass AND attname = 'user_id' AND NOT attisdropped) THEN
        EXECUTE $q$SELECT count(*) FROM app.billing_logs AS b
                   WHERE b.user_id IS NOT NULL
                     AND NOT EXISTS (SELECT FROM auth.users AS u WHERE u.id = b.user_id)$q$ INTO bad;
        IF bad > 0 THEN
            RAISE EXCEPTION '% app.billing_logs row(s) have a user_id with no auth.users row; nothing was changed', bad
                USING ERRCODE = 'AP001', HINT = 'set those user_ids to NULL, then apply again';
        END IF;
    END IF;
    IF EXISTS (SELECT FROM pg_attribute
               WHERE attrelid = 'app.billing_logs'::regclass AND attname = 'membership_id' AND NOT attisdropped) THEN
        EXECUTE $q$SELECT count(*) FROM app.billing_logs AS b
                   WHERE b.membership_id IS NOT NULL
                     AND NOT EXISTS (SELECT FROM app.memberships AS m WHERE m.membership_id = b.membership_id)$q$
            INTO bad;
        IF bad > 0 THEN
            RAISE EXCEPTION '% app.billing_logs row(s) have a membership_id with no app.memberships row; nothing was changed', bad
                USING ERRCODE = 'AP001', HINT = 'set those membership_ids to NULL, then apply again';
        END IF;
    END IF;
END
$preflight$;

-- appdb:step table
CREATE TABLE IF NOT EXISTS app.billing_logs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id uuid,
    membership_id uuid,
    action text NOT NULL,
    amount_cents bigint,
    currency text,
    stripe_customer_id text,
    stripe_object_id text,
    detail jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT billing_logs_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES auth.users (id) ON DELETE SET NULL,
    CONSTRAINT billing_logs_membership_id_fkey FOREIGN KEY (membership_id)
        REFERENCES app.memberships (membership_id) ON DELETE SET NULL
);

-- An adopted table gets the columns it lacks; none of these rewrites a row.
ALTER TABLE app.billing_logs ADD COLUMN IF NOT EXISTS user_id uuid;
ALTER TABLE app.billing_logs ADD COLUMN IF NOT EXISTS membership_id uuid;
ALTER TABLE app.billing_logs ADD COLUMN IF NOT EXISTS amount_cents bigint;
ALTER TABLE app.billing_logs ADD COLUMN IF NOT EXISTS currency text;
ALTER TABLE app.billing_logs ADD COLUMN IF NOT EXISTS stripe_customer_id text;
ALTER TABLE app.billing_logs ADD COLUMN IF NOT EXISTS stripe_object_id text;
ALTER TABLE app.billing_logs ADD COLUMN IF NOT EXISTS detail jsonb NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE app.billing_logs ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now();

-- Append-only (see the top of the file). SECURITY INVOKER, with a fixed search_path.
CREATE OR REPLACE FUNCTION app.billing_logs_append_only() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $append_only$
BEGIN
    IF TG_OP = 'UPDATE'
       AND (NEW.user_id IS NULL OR NEW.user_id IS NOT DISTINCT FROM OLD.user_id)
       AND (NEW.membership_id IS NULL OR NEW.membership_id IS NOT DISTINCT FROM OLD.membership_id)
       AND to_jsonb(NEW) - 'user_id' - 'membership_id' = to_jsonb(OLD) - 'user_id' - 'membership_id'
    THEN
        -- Only links cleared: ON DELETE SET NULL from auth.users or app.memberships.
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'app.billing_logs is append-only: % is refused', TG_OP
        USING ERRCODE = 'restrict_violation',
              HINT = 'record a correcting entry instead; only clearing user_id or membership_id is allowed';
END
$append_only$;

CREATE OR REPLACE TRIGGER billing_logs_append_only
    BEFORE UPDATE OR DELETE ON app.billing_logs
    FOR EACH ROW EXECUTE FUNCTION app.billing_logs_append_only();

CREATE OR REPLACE TRIGGER billing_logs_no_truncate
    BEFORE TRUNCATE ON app.billing_logs
    FOR EACH STATEMENT EXECUTE FUNCTION app.billing_logs_append_only();

ALTER TABLE app.billing_logs ENABLE ROW LEVEL SECURITY;

-- The backend's group roles reach rows through policies: a non-superuser cannot create
-- BYPASSRLS roles. No policy for authenticated or anon (see the top of the file).
DROP POLICY IF EXISTS billing_logs_writer_all ON app.billing_logs;
CREATE POLICY billing_logs_writer_all ON app.billing_logs
    FOR ALL TO app_writer
    USING (true) WITH CHECK (true);

DROP POLICY IF EXISTS billing_logs_reader_select ON app.billing_logs;
CREATE POLICY billing_logs_reader_select ON app.billing_logs
    FOR SELECT TO app_reader
    USING (true);

-- appdb:step foreign_keys
-- Each link's foreign key, found by its column: keep a right one (renamed if needed);
-- otherwise add the right one NOT VALID and drop the wrong ones (production's NO ACTION
-- key on user_id) in this same transaction, so the column is never without one.
DO $fk$
DECLARE
    link record;
    col smallint;
    target_col smallint;
    keep text;
    other record;
BEGIN
    FOR link IN
        SELECT * FROM (VALUES
            ('user_id', 'auth.users'::regclass, 'id', 'billing_logs_user_id_fkey'),
            ('membership_id', 'app.memberships'::regclass, 'membership_id', 'billing_logs_membership_id_fkey')
        ) AS l(col_name, target, target_name, conname)
    LOOP
        SELECT attnum INTO col FROM pg_attribute
        WHERE attrelid = 'app.billing_logs'::regclass AND attname = link.col_name AND NOT attisdropped;
        SELECT attnum INTO target_col FROM pg_attribute
        WHERE attrelid = link.target AND attname = link.target_name AND NOT attisdropped;

        SELECT conname INTO keep FROM pg_constraint
        WHERE conrelid = 'app.billing_logs'::regclass AND contype = 'f'
          AND conkey = ARRAY[col] AND confrelid = link.target AND confkey = ARRAY[target_col]
          AND confdeltype = 'n'
        ORDER BY conname = link.conname DESC, convalidated DESC, conname
        LIMIT 1;

        IF keep IS NULL THEN
            keep := link.conname || '_new';
            RAISE NOTICE 'adding % (NOT VALID) on app.billing_logs(%) -> %', link.conname, link.col_name, link.target;
            EXECUTE format('ALTER TABLE app.billing_logs ADD CONSTRAINT %I FOREIGN KEY (%I) '
                           'REFERENCES %s (%I) ON DELETE SET NULL NOT VALID',
                           keep, link.col_name, link.target, link.target_name);
        END IF;

        FOR other IN
            SELECT c.conname, c.confrelid::regclass AS target FROM pg_constraint AS c
            WHERE c.conrelid = 'app.billing_logs'::regclass AND c.contype = 'f'
              AND c.conkey = ARRAY[col] AND c.conname <> keep
        LOOP
            RAISE NOTICE 'dropping foreign key % on app.billing_logs(%) -> %', other.conname, link.col_name, other.target;
            EXECUTE format('ALTER TABLE app.billing_logs DROP CONSTRAINT %I', other.conname);
        END LOOP;

        IF keep <> link.conname THEN
            EXECUTE format('ALTER TABLE app.billing_logs RENAME CONSTRAINT %I TO %I', keep, link.conname);
        END IF;
    END LOOP;
END
$fk$;

-- appdb:step drop_invalid_indexes
-- An interrupted CONCURRENTLY build leaves an INVALID index that IF NOT EXISTS would
-- keep for ever: drop such a leftover so the next steps build it again.
DO $invalid$
DECLARE
    leftover text;
BEGIN
    FOR leftover IN
        SELECT i.indexrelid::regclass::text FROM pg_index AS i
        JOIN pg_class AS c ON c.oid = i.indexrelid
        WHERE i.indrelid = 'app.billing_logs'::regclass AND NOT i.indisvalid
          AND c.relname IN ('billing_logs_user_id_idx', 'billing_logs_membership_id_idx')
    LOOP
        RAISE NOTICE 'dropping the invalid index % left by an interrupted build', leftover;
        EXECUTE format('DROP INDEX %s', leftover);
    END LOOP;
END
$invalid$;

-- appdb:step user_id_index transaction=false
-- The engine runs a transaction=false step in autocommit: CONCURRENTLY blocks no writer.
-- squawk-ignore ban-concurrent-index-creation-in-transaction
CREATE INDEX CONCURRENTLY IF NOT EXISTS billing_logs_user_id_idx ON app.billing_logs (user_id);

-- appdb:step membership_id_index transaction=false
-- squawk-ignore ban-concurrent-index-creation-in-transaction
CREATE INDEX CONCURRENTLY IF NOT EXISTS billing_logs_membership_id_idx ON app.billing_logs (membership_id);

-- appdb:step validate statement_timeout=1h
ALTER TABLE app.billing_logs VALIDATE CONSTRAINT billing_logs_user_id_fkey;
ALTER TABLE app.billing_logs VALIDATE CONSTRAINT billing_logs_membership_id_fkey;
