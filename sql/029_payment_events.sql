-- 029: app.payment_events, the Stripe webhook events the backend receives, stored idempotently.
--
-- Stripe retries deliveries and sends duplicates, so stripe_event_id is unique: the
-- backend inserts with ON CONFLICT (stripe_event_id) DO NOTHING and processes an event
-- once. The row keeps the event type, the payload as Stripe sent it (jsonb), when it was
-- received and processed, and the last processing error.
--
-- Links, filled in where the backend knows them, and what deleting a user does to them:
--   user_id       -> auth.users(id)                ON DELETE SET NULL
--   membership_id -> app.memberships(membership_id) ON DELETE SET NULL
-- Deleting an auth user is never blocked (NO ACTION or RESTRICT would block it), and the
-- event outlives the user: Stripe's own record of it is the source of truth for
-- accounting, and keeping the event id keeps a late retry of it from being processed
-- again. CASCADE would delete that memory. Each link has an index, so the SET NULL that
-- a user's deletion runs finds its rows without scanning the table.
--
-- Access: row level security is on. app_writer (the backend) and app_reader reach rows
-- through the policies below; service_role bypasses RLS. The grants come from the Pulumi
-- program (appdb/access.py): app_writer and service_role DML, app_reader SELECT,
-- authenticated NOTHING and anon nothing. The backend serves what a user may see of
-- their payments; Stripe payloads (customer details, amounts, metadata) are not for the
-- Data API, so there is no policy for authenticated either.
--
-- Production already has this table, made by the backend's older migrations (no links,
-- no processing error, RLS off, the event id unique through an index of another name;
-- tests/states/production_billing.sql). This file converges there without touching a
-- row: it adds the missing columns (nullable, or with a non-volatile default, stored
-- without a rewrite), finds the unique key and the foreign keys by their columns, adds
-- a foreign key NOT VALID and validates it in the last step. An adopted table keeps its
-- own primary key. It refuses, before changing anything, a table it cannot converge.

-- appdb:step preflight statement_timeout=1h
-- Read-only: its scans block no writer.
DO $preflight$
DECLARE
    missing text;
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
    IF to_regclass('app.payment_events') IS NULL THEN
        RETURN;
    END IF;
    -- The columns every event has; the others are added where missing.
    SELECT string_agg(wanted, ', ') INTO missing
    FROM unnest(ARRAY['stripe_event_id', 'event_type', 'payload']) AS wanted
    WHERE NOT EXISTS (SELECT FROM pg_attribute
                      WHERE attrelid = 'app.payment_events'::regclass AND attname = wanted AND NOT attisdropped);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'app.payment_events exists without the column(s) %; nothing was changed', missing
            USING ERRCODE = 'AP001',
                  HINT = 'rename or add them in a migration before 029, or pull the table as it is (appdb pull)';
    END IF;
    SELECT count(*) INTO bad FROM (
        SELECT stripe_event_id FROM app.payment_events GROUP BY stripe_event_id HAVING count(*) > 1
    ) AS duplicated;
    IF bad > 0 THEN
        RAISE EXCEPTION '% stripe_event_id value(s) occur more than once in app.payment_events; nothing was changed', bad
            USING ERRCODE = 'AP001',
                  HINT = 'keep one row per event (SELECT stripe_event_id, count(*) FROM app.payment_events '
                         'GROUP BY 1 HAVING count(*) > 1), then apply again';
    END IF;
    IF EXISTS (SELECT FROM pg_attribute
               WHERE attrelid = 'app.payment_events'::regclass AND attname = 'user_id' AND NOT attisdropped) THEN
        EXECUTE $q$SELECT count(*) FROM app.payment_events AS e
                   WHERE e.user_id IS NOT NULL
                     AND NOT EXISTS (SELECT FROM auth.users AS u WHERE u.id = e.user_id)$q$ INTO bad;
        IF bad > 0 THEN
            RAISE EXCEPTION '% app.payment_events row(s) have a user_id with no auth.users row; nothing was changed', bad
                USING ERRCODE = 'AP001', HINT = 'set those user_ids to NULL, then apply again';
        END IF;
    END IF;
    IF EXISTS (SELECT FROM pg_attribute
               WHERE attrelid = 'app.payment_events'::regclass AND attname = 'membership_id' AND NOT attisdropped) THEN
        EXECUTE $q$SELECT count(*) FROM app.payment_events AS e
                   WHERE e.membership_id IS NOT NULL
                     AND NOT EXISTS (SELECT FROM app.memberships AS m WHERE m.membership_id = e.membership_id)$q$
            INTO bad;
        IF bad > 0 THEN
            RAISE EXCEPTION '% app.payment_events row(s) have a membership_id with no app.memberships row; nothing was changed', bad
                USING ERRCODE = 'AP001', HINT = 'set those membership_ids to NULL, then apply again';
        END IF;
    END IF;
END
$preflight$;

-- appdb:step table
CREATE TABLE IF NOT EXISTS app.payment_events (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    stripe_event_id text NOT NULL,
    event_type text NOT NULL,
    payload jsonb NOT NULL,
    user_id uuid,
    membership_id uuid,
    received_at timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz,
    processing_error text,
    CONSTRAINT payment_events_stripe_event_id_key UNIQUE (stripe_event_id),
    CONSTRAINT payment_events_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES auth.users (id) ON DELETE SET NULL,
    CONSTRAINT payment_events_membership_id_fkey FOREIGN KEY (membership_id)
        REFERENCES app.memberships (membership_id) ON DELETE SET NULL
);

-- An adopted table gets the columns it lacks; none of these rewrites a row.
ALTER TABLE app.payment_events ADD COLUMN IF NOT EXISTS user_id uuid;
ALTER TABLE app.payment_events ADD COLUMN IF NOT EXISTS membership_id uuid;
ALTER TABLE app.payment_events ADD COLUMN IF NOT EXISTS received_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE app.payment_events ADD COLUMN IF NOT EXISTS processed_at timestamptz;
ALTER TABLE app.payment_events ADD COLUMN IF NOT EXISTS processing_error text;

-- The event id is unique: add a constraint only where neither a constraint nor a full
-- unique index covers exactly (stripe_event_id). The preflight refused duplicates.
DO $unique$
BEGIN
    IF NOT EXISTS (
        SELECT FROM pg_index AS i
        JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        WHERE i.indrelid = 'app.payment_events'::regclass
          AND i.indisunique AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL
          AND i.indnkeyatts = 1 AND a.attname = 'stripe_event_id'
    ) THEN
        RAISE NOTICE 'app.payment_events has no unique key on stripe_event_id: adding payment_events_stripe_event_id_key';
        ALTER TABLE app.payment_events ADD CONSTRAINT payment_events_stripe_event_id_key UNIQUE (stripe_event_id);
    END IF;
END
$unique$;

ALTER TABLE app.payment_events ENABLE ROW LEVEL SECURITY;

-- The backend's group roles reach rows through policies: a non-superuser cannot create
-- BYPASSRLS roles. No policy for authenticated or anon (see the top of the file).
DROP POLICY IF EXISTS payment_events_writer_all ON app.payment_events;
CREATE POLICY payment_events_writer_all ON app.payment_events
    FOR ALL TO app_writer
    USING (true) WITH CHECK (true);

DROP POLICY IF EXISTS payment_events_reader_select ON app.payment_events;
CREATE POLICY payment_events_reader_select ON app.payment_events
    FOR SELECT TO app_reader
    USING (true);

-- appdb:step foreign_keys
-- Each link's foreign key, found by its column: keep a right one (renamed if needed);
-- otherwise add the right one NOT VALID and drop the wrong ones in this same
-- transaction, so the column is never without one. The scan happens in the last step.
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
            ('user_id', 'auth.users'::regclass, 'id', 'payment_events_user_id_fkey'),
            ('membership_id', 'app.memberships'::regclass, 'membership_id', 'payment_events_membership_id_fkey')
        ) AS l(col_name, target, target_name, conname)
    LOOP
        SELECT attnum INTO col FROM pg_attribute
        WHERE attrelid = 'app.payment_events'::regclass AND attname = link.col_name AND NOT attisdropped;
        SELECT attnum INTO target_col FROM pg_attribute
        WHERE attrelid = link.target AND attname = link.target_name AND NOT attisdropped;

        SELECT conname INTO keep FROM pg_constraint
        WHERE conrelid = 'app.payment_events'::regclass AND contype = 'f'
          AND conkey = ARRAY[col] AND confrelid = link.target AND confkey = ARRAY[target_col]
          AND confdeltype = 'n'
        ORDER BY conname = link.conname DESC, convalidated DESC, conname
        LIMIT 1;

        IF keep IS NULL THEN
            keep := link.conname || '_new';
            RAISE NOTICE 'adding % (NOT VALID) on app.payment_events(%) -> %', link.conname, link.col_name, link.target;
            EXECUTE format('ALTER TABLE app.payment_events ADD CONSTRAINT %I FOREIGN KEY (%I) '
                           'REFERENCES %s (%I) ON DELETE SET NULL NOT VALID',
                           keep, link.col_name, link.target, link.target_name);
        END IF;

        FOR other IN
            SELECT c.conname, c.confrelid::regclass AS target FROM pg_constraint AS c
            WHERE c.conrelid = 'app.payment_events'::regclass AND c.contype = 'f'
              AND c.conkey = ARRAY[col] AND c.conname <> keep
        LOOP
            RAISE NOTICE 'dropping foreign key % on app.payment_events(%) -> %', other.conname, link.col_name, other.target;
            EXECUTE format('ALTER TABLE app.payment_events DROP CONSTRAINT %I', other.conname);
        END LOOP;

        IF keep <> link.conname THEN
            EXECUTE format('ALTER TABLE app.payment_events RENAME CONSTRAINT %I TO %I', keep, link.conname);
        END IF;
    END LOOP;
END
$fk$;

-- appdb:step drop_invalid_indexes
-- A CONCURRENTLY build that was interrupted leaves an INVALID index, which IF NOT EXISTS
-- would then keep for ever: drop such a leftover so the next steps build it again.
DO $invalid$
DECLARE
    leftover text;
BEGIN
    FOR leftover IN
        SELECT i.indexrelid::regclass::text FROM pg_index AS i
        JOIN pg_class AS c ON c.oid = i.indexrelid
        WHERE i.indrelid = 'app.payment_events'::regclass AND NOT i.indisvalid
          AND c.relname IN ('payment_events_user_id_idx', 'payment_events_membership_id_idx')
    LOOP
        RAISE NOTICE 'dropping the invalid index % left by an interrupted build', leftover;
        EXECUTE format('DROP INDEX %s', leftover);
    END LOOP;
END
$invalid$;

-- appdb:step user_id_index transaction=false
-- The engine runs a transaction=false step in autocommit, so CONCURRENTLY is allowed
-- and the build blocks no writer.
-- squawk-ignore ban-concurrent-index-creation-in-transaction
CREATE INDEX CONCURRENTLY IF NOT EXISTS payment_events_user_id_idx ON app.payment_events (user_id);

-- appdb:step membership_id_index transaction=false
-- squawk-ignore ban-concurrent-index-creation-in-transaction
CREATE INDEX CONCURRENTLY IF NOT EXISTS payment_events_membership_id_idx ON app.payment_events (membership_id);

-- appdb:step validate statement_timeout=1h
-- VALIDATE scans under SHARE UPDATE EXCLUSIVE, which blocks no reader or writer; on a
-- valid constraint it is a no-op.
ALTER TABLE app.payment_events VALIDATE CONSTRAINT payment_events_user_id_fkey;
ALTER TABLE app.payment_events VALIDATE CONSTRAINT payment_events_membership_id_fkey;
