-- 027: app.memberships, with user_id referencing auth.users(id) ON DELETE CASCADE.
--
-- Users live in Supabase Auth's auth.users; there is no profiles table in any schema.
-- An earlier local migration declared user_id REFERENCES app.profiles(user_id) and broke
-- the deploy. This file converges from every state it can meet:
--   (a) no table yet: it is created whole;
--   (b) production: the right foreign key, two unique constraints (028 removes one), rows;
--       no row is touched;
--   (c) a user_id foreign key pointing elsewhere or carrying another name: it is found by
--       its column, not its name, and replaced, never leaving user_id without one.
-- It may add missing columns (nullable, or with a non-volatile default, which PostgreSQL
-- stores without rewriting the table) and enable RLS; it never rewrites or deletes rows.
--
-- The engine runs each step in its own transaction with lock_timeout (--lock-timeout)
-- and statement_timeout set, so every step must be safe to run again.

-- appdb:step preflight statement_timeout=1h
-- Refuse, before changing anything, what would make the foreign key or the check fail.
-- Read-only: its scans block no writer, so it gets the validation's generous timeout,
-- and the next step's locks are not held while it reads.
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
        RETURN;
    END IF;
    SELECT count(*) INTO bad
    FROM app.memberships AS m
    WHERE m.user_id IS NOT NULL
      AND NOT EXISTS (SELECT FROM auth.users AS u WHERE u.id = m.user_id);
    IF bad > 0 THEN
        RAISE EXCEPTION '% app.memberships row(s) have a user_id with no auth.users row; nothing was changed', bad
            USING ERRCODE = 'AP001',
                  HINT = 'delete or repair those rows (SELECT * FROM app.memberships m WHERE NOT EXISTS '
                         '(SELECT FROM auth.users u WHERE u.id = m.user_id)), then apply again';
    END IF;
    IF EXISTS (
        SELECT FROM pg_attribute
        WHERE attrelid = 'app.memberships'::regclass AND attname = 'plan_interval' AND NOT attisdropped
    ) THEN
        EXECUTE $q$SELECT count(*) FROM app.memberships
                   WHERE plan_interval IS NOT NULL AND plan_interval NOT IN ('month', 'year')$q$ INTO bad;
        IF bad > 0 THEN
            RAISE EXCEPTION '% app.memberships row(s) have a plan_interval other than month or year; nothing was changed', bad
                USING ERRCODE = 'AP001', HINT = 'repair those rows, then apply again';
        END IF;
    END IF;
END
$preflight$;

-- appdb:step table
CREATE SCHEMA IF NOT EXISTS app;

-- The Pulumi program owns these group roles; without it (appdb alone) they are made
-- here, and never dropped: the RLS policies below name them.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app_writer') THEN
        CREATE ROLE app_writer NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app_reader') THEN
        CREATE ROLE app_reader NOLOGIN;
    END IF;
END
$roles$;

CREATE TABLE IF NOT EXISTS app.memberships (
    membership_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL,
    status text NOT NULL DEFAULT 'incomplete',
    plan_interval text,
    stripe_customer_id text,
    stripe_subscription_id text,
    stripe_price_id text,
    current_period_end timestamptz,
    cancel_at_period_end boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT memberships_user_id_key UNIQUE (user_id),
    CONSTRAINT memberships_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES auth.users (id) ON DELETE CASCADE,
    CONSTRAINT memberships_plan_interval_check CHECK (plan_interval IN ('month', 'year'))
);

-- An adopted table gets the columns it lacks; none of these rewrites a row.
ALTER TABLE app.memberships ADD COLUMN IF NOT EXISTS status text NOT NULL DEFAULT 'incomplete';
ALTER TABLE app.memberships ADD COLUMN IF NOT EXISTS plan_interval text;
ALTER TABLE app.memberships ADD COLUMN IF NOT EXISTS stripe_customer_id text;
ALTER TABLE app.memberships ADD COLUMN IF NOT EXISTS stripe_subscription_id text;
ALTER TABLE app.memberships ADD COLUMN IF NOT EXISTS stripe_price_id text;
ALTER TABLE app.memberships ADD COLUMN IF NOT EXISTS current_period_end timestamptz;
ALTER TABLE app.memberships ADD COLUMN IF NOT EXISTS cancel_at_period_end boolean NOT NULL DEFAULT false;
ALTER TABLE app.memberships ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE app.memberships ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now();

-- Exactly one unique constraint on user_id: add one only when neither a constraint
-- nor a full unique index covers exactly (user_id). 028 removes a duplicate.
DO $unique$
BEGIN
    IF NOT EXISTS (
        SELECT FROM pg_index AS i
        JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        WHERE i.indrelid = 'app.memberships'::regclass
          AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
          AND i.indnkeyatts = 1 AND a.attname = 'user_id'
    ) THEN
        RAISE NOTICE 'app.memberships has no unique key on user_id: adding memberships_user_id_key';
        ALTER TABLE app.memberships ADD CONSTRAINT memberships_user_id_key UNIQUE (user_id);
    END IF;
END
$unique$;

-- The check is added NOT VALID on an adopted table and validated in the last step,
-- which blocks no writer.
DO $check$
BEGIN
    IF NOT EXISTS (
        SELECT FROM pg_constraint
        WHERE conrelid = 'app.memberships'::regclass AND conname = 'memberships_plan_interval_check'
    ) THEN
        ALTER TABLE app.memberships ADD CONSTRAINT memberships_plan_interval_check
            CHECK (plan_interval IN ('month', 'year')) NOT VALID;
    END IF;
END
$check$;

ALTER TABLE app.memberships ENABLE ROW LEVEL SECURITY;

-- A signed-in user reads only their own membership; the backend's group roles reach
-- rows through policies because a non-superuser cannot create BYPASSRLS roles.
DROP POLICY IF EXISTS memberships_select_own ON app.memberships;
CREATE POLICY memberships_select_own ON app.memberships
    FOR SELECT TO authenticated
    USING ((SELECT auth.uid()) = user_id);

DROP POLICY IF EXISTS memberships_writer_all ON app.memberships;
CREATE POLICY memberships_writer_all ON app.memberships
    FOR ALL TO app_writer
    USING (true) WITH CHECK (true);

DROP POLICY IF EXISTS memberships_reader_select ON app.memberships;
CREATE POLICY memberships_reader_select ON app.memberships
    FOR SELECT TO app_reader
    USING (true);

-- appdb:step foreign_key
-- Find the user_id foreign key by its column. Keep a right one (renamed if needed);
-- otherwise add the right one NOT VALID and drop the wrong ones in this same
-- transaction, so user_id is never without a foreign key. NOT VALID takes its locks
-- for milliseconds; the scan happens in the next step.
DO $fk$
DECLARE
    user_col smallint;
    id_col smallint;
    keep text;
    other record;
BEGIN
    SELECT attnum INTO user_col FROM pg_attribute
    WHERE attrelid = 'app.memberships'::regclass AND attname = 'user_id' AND NOT attisdropped;
    SELECT attnum INTO id_col FROM pg_attribute
    WHERE attrelid = 'auth.users'::regclass AND attname = 'id' AND NOT attisdropped;

    SELECT conname INTO keep FROM pg_constraint
    WHERE conrelid = 'app.memberships'::regclass AND contype = 'f'
      AND conkey = ARRAY[user_col] AND confrelid = 'auth.users'::regclass
      AND confkey = ARRAY[id_col] AND confdeltype = 'c'
    ORDER BY conname = 'memberships_user_id_fkey' DESC, convalidated DESC, conname
    LIMIT 1;

    IF keep IS NULL THEN
        keep := 'memberships_user_id_auth_users_fkey';
        RAISE NOTICE 'adding % (NOT VALID) on app.memberships(user_id) -> auth.users(id)', keep;
        ALTER TABLE app.memberships ADD CONSTRAINT memberships_user_id_auth_users_fkey
            FOREIGN KEY (user_id) REFERENCES auth.users (id) ON DELETE CASCADE NOT VALID;
    END IF;

    FOR other IN
        SELECT c.conname, c.confrelid::regclass AS target FROM pg_constraint AS c
        WHERE c.conrelid = 'app.memberships'::regclass AND c.contype = 'f'
          AND c.conkey = ARRAY[user_col] AND c.conname <> keep
    LOOP
        RAISE NOTICE 'dropping foreign key % on app.memberships(user_id) -> %', other.conname, other.target;
        EXECUTE format('ALTER TABLE app.memberships DROP CONSTRAINT %I', other.conname);
    END LOOP;

    IF keep <> 'memberships_user_id_fkey' THEN
        RAISE NOTICE 'renaming foreign key % to memberships_user_id_fkey', keep;
        EXECUTE format('ALTER TABLE app.memberships RENAME CONSTRAINT %I TO memberships_user_id_fkey', keep);
    END IF;
END
$fk$;

-- appdb:step validate statement_timeout=1h
-- VALIDATE scans the table under SHARE UPDATE EXCLUSIVE, which blocks no reader or
-- writer, so it gets a generous statement_timeout. On a valid constraint it is a no-op.
ALTER TABLE app.memberships VALIDATE CONSTRAINT memberships_user_id_fkey;
ALTER TABLE app.memberships VALIDATE CONSTRAINT memberships_plan_interval_check;
