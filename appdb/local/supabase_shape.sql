-- The Supabase shape: what a hosted Supabase database looks like to everything appdb does.
-- Every cluster the project starts gets it (`appdb local up`, the tests' clusters, the
-- throwaway builds of `appdb schema`/`baseline`, CI's throwaway database, the benchmarks):
-- appdb/local/cluster.py's Cluster.shape runs this file. docs/supabase.md says what it
-- reproduces and what it leaves out; tests/test_supabase_shape.py holds it against the
-- checked list tests/supabase/expected_shape.json on PostgreSQL 15 and 17.
--
-- It reproduces the roles (attributes, INHERIT, memberships, per-role settings), the
-- database's owner and grants, the `extensions` schema with pgcrypto and uuid-ossp on
-- postgres's search_path, the `auth` schema with GoTrue's auth.users and auth functions,
-- the grants (SELECT on auth.users WITH GRANT OPTION to postgres), the default privileges,
-- and hosted Supabase's 2025-04 restriction (postgres has no CREATE on `auth` and is no
-- member of supabase_auth_admin, supabase_storage_admin, supabase_realtime_admin).
--
-- Written from the facts of Supabase's own SQL (the statements are the project's own):
--   supabase/postgres  migrations/db: init-scripts, then migrations, in migrate.sh's order,
--       at 7db7e1a9e34b9ffb9b0e3372ccf08eb4fa772f4b (develop, 2024-10-23) and the later
--       files up to 20261010094800_postgres-role-safeupdate.sql
--       (4a153fd7b164c7b541516ca564533b10f896a29b), among them
--       20250421084701_revoke_admin_roles_from_postgres.sql (the hosted restriction) and
--       20250605172253_grant_with_admin_to_postgres_16_and_above.sql;
--   supabase/auth (GoTrue)  migrations/, all 70, at bc32168e13fdc928c98b449fc76bc3fdb9a293c5
--       (2026-08-20).
--
-- Run by the bootstrap superuser supabase_admin (initdb -U supabase_admin) in each database
-- to shape; roles are cluster-wide, the rest is per database. Safe to run again; one
-- transaction. PostgreSQL 15 to 18: the 16+ membership options go through EXECUTE.
--
-- No role gets a password here: supabase_auth_admin, authenticator and the other service
-- logins can log in on Supabase (LOGIN), and here they have the attribute but no password,
-- so nobody can; postgres's password comes from the cluster's own password file.

BEGIN;
SET LOCAL client_min_messages = warning;

DO $check$
BEGIN
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        RAISE EXCEPTION 'supabase_shape.sql must be run by a superuser (supabase_admin), not %', current_user;
    END IF;
END
$check$;

-- ---------------------------------------------------------------------------------------------
-- 1. Roles (cluster-wide): created when missing, attributes and settings set every time.
-- ---------------------------------------------------------------------------------------------
DO $roles$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT * FROM (VALUES
        -- name,                       attributes (Supabase's after all migrations)
        ('postgres',                   'LOGIN INHERIT NOSUPERUSER CREATEROLE CREATEDB REPLICATION BYPASSRLS'),
        ('anon',                       'NOLOGIN INHERIT NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION NOBYPASSRLS'),
        ('authenticated',              'NOLOGIN INHERIT NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION NOBYPASSRLS'),
        ('service_role',               'NOLOGIN INHERIT NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION BYPASSRLS'),
        ('authenticator',              'LOGIN NOINHERIT NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION NOBYPASSRLS'),
        ('supabase_auth_admin',        'LOGIN NOINHERIT NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION NOBYPASSRLS'),
        ('supabase_storage_admin',     'LOGIN NOINHERIT NOSUPERUSER CREATEROLE NOCREATEDB NOREPLICATION NOBYPASSRLS'),
        ('supabase_realtime_admin',    'LOGIN NOINHERIT NOSUPERUSER CREATEROLE NOCREATEDB REPLICATION NOBYPASSRLS'),
        ('supabase_replication_admin', 'LOGIN INHERIT NOSUPERUSER NOCREATEROLE NOCREATEDB REPLICATION NOBYPASSRLS'),
        ('supabase_etl_admin',         'LOGIN INHERIT NOSUPERUSER NOCREATEROLE NOCREATEDB REPLICATION NOBYPASSRLS'),
        ('supabase_read_only_user',    'LOGIN INHERIT NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION BYPASSRLS'),
        ('dashboard_user',             'NOLOGIN INHERIT NOSUPERUSER CREATEROLE CREATEDB REPLICATION NOBYPASSRLS'),
        ('supabase_superuser',         'NOLOGIN INHERIT NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION NOBYPASSRLS')
    ) AS t(name, attrs)
    LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r.name) THEN
            EXECUTE format('CREATE ROLE %I %s', r.name, r.attrs);
        ELSE
            EXECUTE format('ALTER ROLE %I %s', r.name, r.attrs);
        END IF;
    END LOOP;
END
$roles$;

-- supabase_admin is the bootstrap superuser that runs this file.
ALTER ROLE supabase_admin SUPERUSER LOGIN INHERIT CREATEROLE CREATEDB REPLICATION BYPASSRLS;

-- Per-role settings (role-wide, all databases). The search_paths are written as Supabase's
-- init-scripts/00000000000003-post-setup.sql writes them, "\$user": run as SQL, the backslash
-- stays, so the first entry is a schema named \$user, which never exists, and $user is never
-- expanded. Hosted projects show exactly that (SHOW search_path: "\$user", public, extensions;
-- supabase/supabase#20842): a schema named like the login is not searched there, nor here.
ALTER ROLE postgres            SET search_path TO "\$user", public, extensions;
ALTER ROLE supabase_admin      SET search_path TO "\$user", public, auth, extensions;
ALTER ROLE anon                SET statement_timeout TO '3s';
ALTER ROLE authenticated       SET statement_timeout TO '8s';
ALTER ROLE authenticator       SET statement_timeout TO '8s';
ALTER ROLE authenticator       SET lock_timeout TO '8s';
ALTER ROLE supabase_auth_admin SET search_path TO auth;
ALTER ROLE supabase_auth_admin SET idle_in_transaction_session_timeout TO 60000;
ALTER ROLE supabase_storage_admin  SET search_path TO storage;
ALTER ROLE supabase_realtime_admin SET search_path TO public, extensions, realtime;

-- Memberships. On 16+ each grant carries INHERIT/SET options; Supabase's come out as the
-- member's INHERIT attribute at grant time (NOINHERIT members get INHERIT FALSE), SET TRUE.
-- postgres holds anon/authenticated/service_role WITH ADMIN OPTION on 16+ only (20250605...).
DO $members$
DECLARE
    pg16 boolean := current_setting('server_version_num')::int >= 160000;
    g record;
BEGIN
    FOR g IN SELECT * FROM (VALUES
        -- granted role,           member,                    admin on 16+
        ('anon',                   'authenticator',           false),
        ('authenticated',          'authenticator',           false),
        ('service_role',           'authenticator',           false),
        ('anon',                   'postgres',                true),
        ('authenticated',          'postgres',                true),
        ('service_role',           'postgres',                true),
        ('pg_monitor',             'postgres',                false),
        ('pg_read_all_data',       'postgres',                false),
        ('pg_signal_backend',      'postgres',                false),
        ('supabase_superuser',     'postgres',                false),
        ('supabase_superuser',     'supabase_etl_admin',      false),
        ('pg_read_all_data',       'supabase_read_only_user', false),
        ('anon',                   'supabase_realtime_admin', false),
        ('authenticated',          'supabase_realtime_admin', false),
        ('service_role',           'supabase_realtime_admin', false),
        ('authenticator',          'supabase_storage_admin',  false)
    ) AS t(granted, member, admin16)
    LOOP
        IF pg16 THEN
            EXECUTE format('GRANT %I TO %I WITH ADMIN %s, INHERIT %s, SET TRUE',
                           g.granted, g.member,
                           CASE WHEN g.admin16 THEN 'TRUE' ELSE 'FALSE' END,
                           (SELECT CASE WHEN rolinherit THEN 'TRUE' ELSE 'FALSE' END
                              FROM pg_roles WHERE rolname = g.member));
        ELSE
            EXECUTE format('GRANT %I TO %I', g.granted, g.member);
        END IF;
    END LOOP;
END
$members$;

-- Hosted restriction (2025-04): postgres is no member of the service admin roles; and
-- authenticator lost supabase_admin in 2022. Revoked only where granted (no warnings).
DO $revoke$
DECLARE
    pg16 boolean := current_setting('server_version_num')::int >= 160000;
    g record;
BEGIN
    FOR g IN SELECT r.rolname AS granted, m.rolname AS member, gr.rolname AS grantor
             FROM pg_auth_members am
             JOIN pg_roles r ON r.oid = am.roleid
             JOIN pg_roles m ON m.oid = am.member
             LEFT JOIN pg_roles gr ON gr.oid = am.grantor
             WHERE (m.rolname = 'postgres'
                    AND r.rolname IN ('supabase_auth_admin', 'supabase_storage_admin',
                                      'supabase_realtime_admin', 'supabase_admin'))
                OR (m.rolname = 'authenticator' AND r.rolname = 'supabase_admin')
    LOOP
        IF pg16 THEN   -- 16+ keeps one grant per grantor; remove each
            EXECUTE format('REVOKE %I FROM %I GRANTED BY %I CASCADE', g.granted, g.member, g.grantor);
        ELSE
            EXECUTE format('REVOKE %I FROM %I CASCADE', g.granted, g.member);
        END IF;
    END LOOP;
END
$revoke$;

-- ---------------------------------------------------------------------------------------------
-- 2. This database: owner and grants.
-- ---------------------------------------------------------------------------------------------
DO $database$
BEGIN
    EXECUTE format('ALTER DATABASE %I OWNER TO postgres', current_database());
    EXECUTE format('GRANT ALL ON DATABASE %I TO postgres, dashboard_user', current_database());
    EXECUTE format('GRANT CREATE ON DATABASE %I TO supabase_realtime_admin, supabase_auth_admin, '
                   'supabase_storage_admin', current_database());
END
$database$;

-- public: owned by pg_database_owner (i.e. postgres, who owns the database) since PG15.
GRANT USAGE ON SCHEMA public TO postgres, anon, authenticated, service_role;
GRANT USAGE, CREATE ON SCHEMA public TO supabase_realtime_admin;
-- Realtime's list_changes sets log_min_messages (init-scripts/00000000000003-realtime-schema.sql).
GRANT SET ON PARAMETER log_min_messages TO supabase_realtime_admin;

-- ---------------------------------------------------------------------------------------------
-- 3. Schema `extensions` (owned by postgres) with pgcrypto and uuid-ossp in it.
-- ---------------------------------------------------------------------------------------------
CREATE SCHEMA IF NOT EXISTS extensions AUTHORIZATION postgres;
ALTER SCHEMA extensions OWNER TO postgres;

-- Supabase's init script creates both as `postgres`, so postgres owns them. Both are
-- trusted extensions, which postgres (CREATE on the database and on `extensions`) may
-- create without being a superuser: no role ever holds more than it does on Supabase.
-- (Their member functions then belong to the bootstrap superuser rather than to postgres;
-- postgres gets every privilege on them, grantable, below, as on Supabase.)
DO $ext$
DECLARE
    e text;
BEGIN
    -- an older local shape, or someone, may have put them elsewhere
    FOREACH e IN ARRAY ARRAY['uuid-ossp', 'pgcrypto'] LOOP
        IF (SELECT n.nspname FROM pg_extension x JOIN pg_namespace n ON n.oid = x.extnamespace
             WHERE x.extname = e) <> 'extensions' THEN
            EXECUTE format('ALTER EXTENSION %I SET SCHEMA extensions', e);
        END IF;
    END LOOP;
END
$ext$;
SET LOCAL ROLE postgres;
CREATE EXTENSION IF NOT EXISTS "uuid-ossp" WITH SCHEMA extensions;
CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA extensions;
RESET ROLE;

GRANT USAGE ON SCHEMA extensions TO postgres, anon, authenticated, service_role, supabase_realtime_admin;
GRANT ALL ON SCHEMA extensions TO dashboard_user;
GRANT ALL ON ALL TABLES    IN SCHEMA extensions TO postgres WITH GRANT OPTION;
GRANT ALL ON ALL ROUTINES  IN SCHEMA extensions TO postgres WITH GRANT OPTION;
GRANT ALL ON ALL SEQUENCES IN SCHEMA extensions TO postgres WITH GRANT OPTION;
GRANT ALL ON ALL TABLES    IN SCHEMA extensions TO dashboard_user;
GRANT ALL ON ALL ROUTINES  IN SCHEMA extensions TO dashboard_user;
GRANT ALL ON ALL SEQUENCES IN SCHEMA extensions TO dashboard_user;

-- ---------------------------------------------------------------------------------------------
-- 4. Schema `auth` (owned by supabase_admin) and auth.users as GoTrue leaves it.
-- ---------------------------------------------------------------------------------------------
CREATE SCHEMA IF NOT EXISTS auth AUTHORIZATION supabase_admin;
ALTER SCHEMA auth OWNER TO supabase_admin;
GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role, postgres, supabase_realtime_admin;
GRANT ALL ON SCHEMA auth TO supabase_auth_admin, dashboard_user;
REVOKE CREATE ON SCHEMA auth FROM postgres;                          -- hosted restriction

-- Column order, types, defaults and constraint names are GoTrue's after its 70 migrations
-- (table first made by supabase/postgres's init script, then altered by GoTrue).
CREATE TABLE IF NOT EXISTS auth.users (
    instance_id                 uuid,
    id                          uuid NOT NULL,
    aud                         varchar(255),
    role                        varchar(255),
    email                       varchar(255),
    encrypted_password          varchar(255),
    email_confirmed_at          timestamptz,
    invited_at                  timestamptz,
    confirmation_token          varchar(255),
    confirmation_sent_at        timestamptz,
    recovery_token              varchar(255),
    recovery_sent_at            timestamptz,
    email_change_token_new      varchar(255),
    email_change                varchar(255),
    email_change_sent_at        timestamptz,
    last_sign_in_at             timestamptz,
    raw_app_meta_data           jsonb,
    raw_user_meta_data          jsonb,
    is_super_admin              boolean,
    created_at                  timestamptz,
    updated_at                  timestamptz,
    phone                       text DEFAULT NULL::character varying,
    phone_confirmed_at          timestamptz,
    phone_change                text DEFAULT ''::character varying,
    phone_change_token          varchar(255) DEFAULT ''::character varying,
    phone_change_sent_at        timestamptz,
    confirmed_at                timestamptz GENERATED ALWAYS AS (LEAST(email_confirmed_at, phone_confirmed_at)) STORED,
    email_change_token_current  varchar(255) DEFAULT ''::character varying,
    email_change_confirm_status smallint DEFAULT 0,
    banned_until                timestamptz,
    reauthentication_token      varchar(255) DEFAULT ''::character varying,
    reauthentication_sent_at    timestamptz,
    is_sso_user                 boolean NOT NULL DEFAULT false,
    deleted_at                  timestamptz,
    is_anonymous                boolean NOT NULL DEFAULT false,
    CONSTRAINT users_pkey PRIMARY KEY (id),
    CONSTRAINT users_phone_key UNIQUE (phone),
    CONSTRAINT users_email_change_confirm_status_check
        CHECK (email_change_confirm_status >= 0 AND email_change_confirm_status <= 2)
);

-- A table left by an older local shape is not GoTrue's: say so rather than patch it.
DO $users_check$
DECLARE
    missing text;
BEGIN
    SELECT string_agg(c, ', ') INTO missing
    FROM unnest(ARRAY['confirmed_at', 'email_change_token_new', 'email_change_token_current',
                      'phone_change', 'reauthentication_token', 'is_sso_user', 'is_anonymous']) c
    WHERE NOT EXISTS (SELECT FROM pg_attribute
                      WHERE attrelid = 'auth.users'::regclass AND attname = c AND NOT attisdropped);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'auth.users is not GoTrue''s (missing: %), it was made by an earlier local shape: start over with bin/appdb local reset (this wipes the local database)', missing;
    END IF;
END
$users_check$;

CREATE INDEX IF NOT EXISTS users_instance_id_idx ON auth.users USING btree (instance_id);
CREATE INDEX IF NOT EXISTS users_instance_id_email_idx ON auth.users USING btree (instance_id, lower(email));
CREATE UNIQUE INDEX IF NOT EXISTS confirmation_token_idx ON auth.users USING btree (confirmation_token)
    WHERE confirmation_token !~ '^[0-9 ]*$';
CREATE UNIQUE INDEX IF NOT EXISTS recovery_token_idx ON auth.users USING btree (recovery_token)
    WHERE recovery_token !~ '^[0-9 ]*$';
CREATE UNIQUE INDEX IF NOT EXISTS email_change_token_current_idx ON auth.users USING btree (email_change_token_current)
    WHERE email_change_token_current !~ '^[0-9 ]*$';
CREATE UNIQUE INDEX IF NOT EXISTS email_change_token_new_idx ON auth.users USING btree (email_change_token_new)
    WHERE email_change_token_new !~ '^[0-9 ]*$';
CREATE UNIQUE INDEX IF NOT EXISTS reauthentication_token_idx ON auth.users USING btree (reauthentication_token)
    WHERE reauthentication_token !~ '^[0-9 ]*$';
CREATE UNIQUE INDEX IF NOT EXISTS users_email_partial_key ON auth.users USING btree (email)
    WHERE is_sso_user = false;
CREATE INDEX IF NOT EXISTS users_is_anonymous_idx ON auth.users USING btree (is_anonymous);

COMMENT ON TABLE auth.users IS 'Auth: Stores user login data within a secure schema.';
COMMENT ON COLUMN auth.users.is_sso_user IS 'Auth: Set this column to true when the account comes from SSO. These accounts can have duplicate emails.';
COMMENT ON INDEX auth.users_email_partial_key IS 'Auth: A partial unique index that applies only when is_sso_user is false';

ALTER TABLE auth.users OWNER TO supabase_auth_admin;
ALTER TABLE auth.users ENABLE ROW LEVEL SECURITY;              -- on, with no policy
-- postgres: every privilege, SELECT also grantable; dashboard_user: every privilege; the API
-- roles: none (an older local shape gave service_role SELECT).
REVOKE ALL ON auth.users FROM PUBLIC, anon, authenticated, service_role;
GRANT ALL ON auth.users TO postgres, dashboard_user;
GRANT SELECT ON auth.users TO postgres WITH GRANT OPTION;

-- ---------------------------------------------------------------------------------------------
-- 5. Auth functions: GoTrue's latest bodies, owned by supabase_auth_admin. EXECUTE stays with
--    PUBLIC (never revoked upstream), so every role can call them.
-- ---------------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid
LANGUAGE sql STABLE
AS $$
  select
  coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$$;

CREATE OR REPLACE FUNCTION auth.role() RETURNS text
LANGUAGE sql STABLE
AS $$
  select
  coalesce(
    nullif(current_setting('request.jwt.claim.role', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
  )::text
$$;

CREATE OR REPLACE FUNCTION auth.email() RETURNS text
LANGUAGE sql STABLE
AS $$
  select
  coalesce(
    nullif(current_setting('request.jwt.claim.email', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email')
  )::text
$$;

CREATE OR REPLACE FUNCTION auth.jwt() RETURNS jsonb
LANGUAGE sql STABLE
AS $$
  select
    coalesce(
        nullif(current_setting('request.jwt.claim', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')
    )::jsonb
$$;

ALTER FUNCTION auth.uid()   OWNER TO supabase_auth_admin;
ALTER FUNCTION auth.role()  OWNER TO supabase_auth_admin;
ALTER FUNCTION auth.email() OWNER TO supabase_auth_admin;
ALTER FUNCTION auth.jwt()   OWNER TO supabase_auth_admin;

COMMENT ON FUNCTION auth.uid()   IS 'Deprecated. Use auth.jwt() -> ''sub'' instead.';
COMMENT ON FUNCTION auth.role()  IS 'Deprecated. Use auth.jwt() -> ''role'' instead.';
COMMENT ON FUNCTION auth.email() IS 'Deprecated. Use auth.jwt() -> ''email'' instead.';

-- The explicit grants Supabase ends with (PUBLIC's EXECUTE already covers everyone):
-- uid/role/email: dashboard_user, supabase_realtime_admin; jwt: postgres, dashboard_user.
REVOKE ALL ON FUNCTION auth.uid(), auth.role(), auth.email(), auth.jwt()
    FROM postgres, anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION auth.uid(), auth.role(), auth.email() TO PUBLIC, dashboard_user, supabase_realtime_admin;
GRANT EXECUTE ON FUNCTION auth.jwt() TO PUBLIC, postgres, dashboard_user;

-- ---------------------------------------------------------------------------------------------
-- 6. Default privileges.
-- ---------------------------------------------------------------------------------------------
-- public: whatever postgres or supabase_admin creates is open to the API roles (and postgres).
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public
    GRANT ALL ON TABLES TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public
    GRANT ALL ON SEQUENCES TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public
    GRANT ALL ON FUNCTIONS TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public
    GRANT ALL ON TABLES TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public
    GRANT ALL ON SEQUENCES TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public
    GRANT ALL ON FUNCTIONS TO postgres, anon, authenticated, service_role;
-- extensions: what supabase_admin creates there is postgres's, grantable.
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA extensions
    GRANT ALL ON TABLES TO postgres WITH GRANT OPTION;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA extensions
    GRANT ALL ON SEQUENCES TO postgres WITH GRANT OPTION;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA extensions
    GRANT ALL ON FUNCTIONS TO postgres WITH GRANT OPTION;
-- auth: what GoTrue (supabase_auth_admin) creates is open to postgres and dashboard_user.
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_auth_admin IN SCHEMA auth
    GRANT ALL ON TABLES TO postgres, dashboard_user;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_auth_admin IN SCHEMA auth
    GRANT ALL ON SEQUENCES TO postgres, dashboard_user;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_auth_admin IN SCHEMA auth
    GRANT ALL ON FUNCTIONS TO postgres, dashboard_user;

-- ---------------------------------------------------------------------------------------------
-- 7. Smaller grants of the latest migrations.
-- ---------------------------------------------------------------------------------------------
GRANT EXECUTE ON FUNCTION pg_catalog.pg_reload_conf() TO postgres;   -- 20251105172723

COMMIT;
