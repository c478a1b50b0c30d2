-- What the Pulumi program creates before the first migration runs (components/schema.py,
-- roles.py, grants.py), for the engine's tests, which run without Pulumi. Run as the
-- non-superuser `postgres` login, like the provider; roles are cluster-wide, so each
-- is created only when missing. app_backend gets no password here: the tests' cluster
-- gives it its own random one (tests/conftest.py), and elsewhere it stays unusable.
CREATE SCHEMA IF NOT EXISTS app;

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app_writer') THEN
        CREATE ROLE app_writer NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app_reader') THEN
        CREATE ROLE app_reader NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app_backend') THEN
        CREATE ROLE app_backend LOGIN IN ROLE app_writer;
    END IF;
END
$roles$;

-- Grants on tables Pulumi gives after the migrations (authenticated: SELECT on
-- app.memberships only); the tests that need it grant it themselves.
GRANT USAGE ON SCHEMA app TO app_writer, app_reader, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA app
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO app_writer, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA app
    GRANT SELECT ON TABLES TO app_reader;
