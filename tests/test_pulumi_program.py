"""The Pulumi program under Pulumi's mocks: graph and order, inputs, secrets, protect flags, rule 1.

The program is run for real (``__main__.py`` through ``runpy``) from copies of the
project in temporary folders, with the config the CLI would hand it: the defaults
declared in Pulumi.yaml merged with the stack file. A ``MockMonitor`` subclass keeps
every ``RegisterResource`` request, so dependencies, protect flags, providers and
which input values are secret are seen exactly as the engine would receive them.

What the real engine does with these registrations is known from pulumi-command's
and pulumi-postgresql's source, and the assertions say why each one matters:
only ``triggers`` replaces a ``local.Command``; a replacement creates the new
command before deleting the old one, and the delete of a migration is its revert.
"""

from __future__ import annotations

import itertools
import json
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pulumi
import pytest

from tests.pulumi_mocks import (
    BACKEND_PASSWORD,
    COMMAND,
    DB_PASSWORD,
    DEFAULT_PRIVILEGES,
    GRANT,
    MIGRATIONS,
    PROJECT,
    PROVIDER,
    RECORDED,
    ROLE,
    SCHEMA,
    SECRET_SIG,
    SIG_KEY,
    STACKS,
    VERIFY_REPORT,
    CapturingMonitor,
    ProgramMocks,
    Registration,
    Run,
    comparable,
    depends_on,
    env,
    make_checkout,
    plain_strings,
    program_modules,
    reveal,
    run_program,
    secret_values,
    stack_config,
    waits_for,
)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    return make_checkout(tmp_path_factory.mktemp("clone") / "appdb")


@pytest.fixture(scope="module")
def runs(checkout) -> dict[str, Run]:
    return {stack: run_program(checkout, stack, stack_config(stack)) for stack in ("local", "dev", "prod")}




# --- the provider -----------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_every_postgresql_resource_uses_the_one_explicit_provider(runs, stack):
    run = runs[stack]
    providers = run.of_type(PROVIDER)
    assert len(providers) == 1
    reference = f"{providers[0].urn}::{providers[0].name}-id"
    postgres_resources = [r for r in run.registrations if r.type.startswith("postgresql:")]
    assert postgres_resources
    for registration in postgres_resources:
        assert registration.provider == reference, f"{registration.name} does not use the program's provider"


@pytest.mark.parametrize("stack", STACKS)
def test_provider_is_no_superuser_with_a_short_timeout_and_a_secret_password(runs, stack):
    inputs = runs[stack].of_type(PROVIDER)[0].inputs
    # The bridged provider receives its config as JSON strings.
    assert json.loads(inputs["superuser"]) is False
    assert json.loads(inputs["connectTimeout"]) == 10
    assert secret_values(inputs["password"]) == [DB_PASSWORD]
    assert inputs["databaseUsername"] == "postgres"


def test_session_pooler_login_maps_to_the_postgres_role_and_to_the_backend_login(checkout):
    run = run_program(checkout, "prod", stack_config("prod", dbUser="postgres.abcdefgh"))
    provider = run.of_type(PROVIDER)[0].inputs
    assert provider["username"] == "postgres.abcdefgh"
    assert provider["databaseUsername"] == "postgres"
    assert run.exports["backend"][0]["user"] == "app_backend.abcdefgh"
    assert env(run.commands["migration-027"])["PGUSER"] == "postgres.abcdefgh"


def test_the_transaction_pooler_port_is_refused(checkout):
    with pytest.raises(Exception, match="6543"):
        run_program(checkout, "dev", stack_config("dev", dbPort=6543))


@pytest.mark.parametrize("key, value, says", [
    ("sslMode", "bogus", "appdb:sslMode: 'bogus' is not one of disable, allow"),
    ("connectTimeout", -1, "appdb:connectTimeout: -1 must be from 1 to 60 seconds"),
    ("adminRole", "rôle", "appdb:adminRole: 'rôle' is not a valid role or schema name"),
    ("dbHost", " ", "appdb:dbHost is empty"),
    ("dbName", "", "appdb:dbName is empty"),
    ("backendRole", "anon", "appdb:backendRole: 'anon' is not a login of the backend's own"),
    ("backendRole", "app_writer", "appdb:backendRole: 'app_writer' is not a login of the backend's own"),
    ("backendRole", "supabase_auth_admin", "appdb:backendRole: 'supabase_auth_admin' is not a login"),
    ("postgresMajor", 16, "appdb:postgresMajor: 16 is not a major Supabase runs (15 or 17)"),
    ("adoptRoles", [1], "appdb:adoptRoles must be a list of role names"),
    ("adoptRoles", ["nobody"], "appdb:adoptRoles: 'nobody' is not a role this program manages"),
])
def test_a_bad_stack_value_is_one_line_that_names_its_key(checkout, key, value, says):
    """A RunError, which Pulumi prints as the message alone, naming the key in the stack file; no traceback."""
    with pytest.raises(pulumi.RunError) as caught:
        run_program(checkout, "dev", stack_config("dev", **{key: value}))
    message = str(caught.value)
    assert message.startswith(says) and message.endswith("(the stack file: Pulumi.<stack>.yaml)")
    assert "\n" not in message


# --- rule 3: no secret in plain text ------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_no_secret_in_plain_text_in_any_resource_input(runs, stack):
    run = runs[stack]
    assert len(run.registrations) > 20
    for registration in run.registrations:
        for text in plain_strings(registration.inputs):
            assert DB_PASSWORD not in text and BACKEND_PASSWORD not in text, (
                f"{registration.type} {registration.name} has a password in plain text"
            )
    # And the passwords are there, as secrets, where they are needed.
    assert secret_values(run.one(ROLE, "roles-backend").inputs["password"]) == [BACKEND_PASSWORD]
    for command in run.commands.values():
        environment = command.inputs["environment"]
        assert environment.get(SIG_KEY) == SECRET_SIG, "the environment carries PGPASSWORD, so it is secret"
        assert reveal(environment)["PGPASSWORD"] == DB_PASSWORD
        assert sum(DB_PASSWORD in text for text in map(str, reveal(environment).values())) == 1


@pytest.mark.parametrize("stack", STACKS)
def test_no_secret_in_plain_text_in_any_stack_output(runs, stack):
    for name, (value, is_secret) in runs[stack].exports.items():
        text = json.dumps(value)
        if not is_secret:
            assert DB_PASSWORD not in text and BACKEND_PASSWORD not in text, f"output {name} shows a password"
        assert "password" not in text.lower() or name == "verification"


def test_verification_result_is_exported_unsecreted_and_parsed(runs):
    value, is_secret = runs["local"].exports["verification"]
    assert value == VERIFY_REPORT
    assert is_secret is False  # deliberately: the command's stdout is secret (see ProgramMocks)


def test_backend_connection_output_has_everything_but_the_password(runs):
    backend, is_secret = runs["local"].exports["backend"]
    assert not is_secret
    assert backend == {"user": "app_backend", "host": "127.0.0.1", "port": 54322, "database": "postgres", "sslmode": "disable"}
    assert runs["local"].exports["backendUrl"][0] == "postgresql://app_backend@127.0.0.1:54322/postgres?sslmode=disable"


# --- the schema, roles and their order ------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_schema_app_adopts_an_existing_one_and_is_owned_by_the_admin_role(runs, stack):
    schema = runs[stack].one(SCHEMA, "schema")
    assert schema.inputs["name"] == "app"
    assert schema.inputs["owner"] == "postgres"
    assert schema.inputs["ifNotExists"] is True
    assert schema.inputs["dropCascade"] is False


@pytest.mark.parametrize("stack", STACKS)
def test_group_roles_cannot_log_in_and_the_backend_is_a_writer_without_ddl(runs, stack):
    run = runs[stack]
    for key, name in (("writer", "app_writer"), ("reader", "app_reader")):
        role = run.one(ROLE, f"roles-{key}")
        assert role.inputs["name"] == name
        assert role.inputs["login"] is False
    backend = run.one(ROLE, "roles-backend").inputs
    assert backend["name"] == "app_backend"
    assert backend["login"] is True
    assert backend["roles"] == ["app_writer"]
    for flag in ("superuser", "createDatabase", "createRole", "bypassRowLevelSecurity", "replication"):
        assert not backend.get(flag), flag
    # No grant of its own: everything comes through app_writer, and nobody gets CREATE.
    for grant in run.of_type(GRANT):
        assert grant.inputs["role"] != "app_backend"
        assert "CREATE" not in grant.inputs["privileges"]


@pytest.mark.parametrize("stack", STACKS)
def test_schema_and_roles_exist_before_the_first_migration(runs, stack):
    run = runs[stack]
    first = run.commands["migration-027"]
    assert depends_on(run, first, SCHEMA, "schema")
    for key in ("writer", "reader", "backend"):
        assert depends_on(run, first, ROLE, f"roles-{key}")


@pytest.mark.parametrize("stack", STACKS)
def test_each_migration_runs_after_the_one_before(runs, stack):
    run = runs[stack]
    names = [r.name for r in run.of_type(COMMAND) if r.name.startswith("migration-")]
    assert names == ["migration-027", "migration-028"]
    assert depends_on(run, run.commands["migration-028"], COMMAND, "migration-027")
    assert not depends_on(run, run.commands["migration-027"], COMMAND, "migration-028")


@pytest.mark.parametrize("stack", STACKS)
def test_a_later_migration_waits_for_the_one_before_alone_and_through_it_for_schema_and_roles(runs, stack):
    """The chain orders creates and deletes; a direct dependency on the schema and roles would
    add their URNs to every migration's state, written again at every step (issue 20)."""
    run = runs[stack]
    later = run.commands["migration-028"]
    assert later.dependencies == [run.urn(COMMAND, "migration-027")]
    assert waits_for(run, later, run.urn(SCHEMA, "schema"))
    for key in ("writer", "reader", "backend"):
        assert waits_for(run, later, run.urn(ROLE, f"roles-{key}"))


@pytest.mark.parametrize("stack", STACKS)
def test_one_command_applies_every_pending_migration_after_every_migrations_own_resource(runs, stack):
    """Every migration has its resource before anything is applied: one that `migrations-apply`
    applies in a run that then fails is still reverted when its file is removed (open defect
    found on the engine: 031 applied, 032 failed, 031 had no resource and was never reverted)."""
    run = runs[stack]
    apply = run.commands["migrations-apply"]
    assert (apply.inputs["create"], apply.inputs["update"]) == ("./bin/appdb apply", "./bin/appdb apply")
    assert "delete" not in apply.inputs, "reverting is each migration's own delete"
    assert "triggers" not in apply.inputs and apply.protect is False
    assert depends_on(run, apply, SCHEMA, "schema")
    for key in ("writer", "reader", "backend"):
        assert depends_on(run, apply, ROLE, f"roles-{key}")
    for name in ("migration-027", "migration-028"):
        assert depends_on(run, apply, COMMAND, name), name
        assert not waits_for(run, run.commands[name], apply.urn), name
    assert depends_on(run, run.commands["migration-028"], COMMAND, "migration-027")
    # The registration order is the plan's: each migration one by one, then the apply.
    order = [r.name for r in run.of_type(COMMAND)]
    assert order.index("migration-027") < order.index("migration-028") < order.index("migrations-apply")


@pytest.mark.parametrize("stack", STACKS)
def test_a_migration_s_own_create_and_update_start_no_process_of_the_engine(runs, stack):
    for name in ("migration-027", "migration-028"):
        command = runs[stack].commands[name]
        assert command.inputs["create"] == command.inputs["update"] == RECORDED == "true"


@pytest.mark.parametrize("stack", STACKS)
def test_table_grants_wait_for_the_migrations_that_create_the_tables(runs, stack):
    run = runs[stack]
    table_grants = [g for g in run.of_type(GRANT) if g.inputs["objectType"] in ("table", "sequence")]
    assert table_grants
    for grant in table_grants:
        for migration in ("migration-027", "migration-028"):
            assert waits_for(run, grant, run.urn(COMMAND, migration)), f"{grant.name} may run before {migration}"
    for grant in run.of_type(GRANT):
        assert waits_for(run, grant, run.urn(SCHEMA, "schema"))


def catalog_rows(registration: Registration) -> set[tuple[str, ...]]:
    """The catalog rows a privilege resource rewrites, whoever its grantee is.

    A GRANT or REVOKE rewrites the object's whole ACL: ``pg_namespace.nspacl`` for a
    schema, ``pg_class.relacl`` for each table or sequence (``*``: all of that kind in
    the schema), and ALTER DEFAULT PRIVILEGES the ``pg_default_acl`` row of (owner,
    schema, kind). Two transactions that rewrite one row at once fail with
    ``tuple concurrently updated``.
    """
    inputs = registration.inputs
    database, schema = inputs["database"], inputs["schema"]
    kind = inputs["objectType"]
    if registration.type == DEFAULT_PRIVILEGES:
        return {("pg_default_acl", database, inputs["owner"], schema, kind)}
    if kind == "schema":
        return {("pg_namespace", database, schema)}
    return {("pg_class", database, schema, kind, name) for name in inputs.get("objects") or ["*"]}


def share_a_row(a: set[tuple[str, ...]], b: set[tuple[str, ...]]) -> bool:
    for row_a in a:
        for row_b in b:
            if row_a == row_b:
                return True
            if row_a[0] == row_b[0] == "pg_class" and row_a[:4] == row_b[:4] and "*" in (row_a[4], row_b[4]):
                return True
    return False


@pytest.mark.parametrize("stack", STACKS)
def test_no_two_privilege_resources_on_one_catalog_row_can_run_at_once(runs, stack):
    """The engine runs in parallel whatever does not depend on each other, on create, update,
    replace and delete alike; only a dependency, direct or not, orders two resources."""
    run = runs[stack]
    privileges = run.of_type(GRANT) + run.of_type(DEFAULT_PRIVILEGES)
    assert len(privileges) > 10
    unordered = [
        f"{a.name} / {b.name}"
        for a, b in itertools.combinations(privileges, 2)
        if share_a_row(catalog_rows(a), catalog_rows(b)) and not (waits_for(run, a, b.urn) or waits_for(run, b, a.urn))
    ]
    assert not unordered, f"these may rewrite the same catalog row at once: {unordered}"


def test_the_privilege_resources_form_one_chain_in_the_plan_s_order(runs):
    """One chain: each waits for the one before it, so deletes unwind it one by one too."""
    run = runs["dev"]
    chain = [r for r in run.registrations if r.type in (GRANT, DEFAULT_PRIVILEGES)]
    for before, after in zip(chain, chain[1:]):
        assert after.dependencies == [before.urn], f"{after.name} must wait for {before.name} alone"
    first = set(chain[0].dependencies)
    assert run.urn(COMMAND, "migration-028") in first and run.urn(SCHEMA, "schema") in first


@pytest.mark.parametrize("stack", STACKS)
def test_verification_runs_after_every_migration_and_grant(runs, stack):
    run = runs[stack]
    verify = run.commands["verify"]
    for registration in run.of_type(COMMAND) + run.of_type(GRANT) + run.of_type(DEFAULT_PRIVILEGES):
        if registration is not verify:
            assert registration.urn in verify.dependencies, f"verify may run before {registration.name}"
    assert verify.inputs["create"] == "./bin/appdb verify --json"
    assert "delete" not in verify.inputs


# --- grants ------------------------------------------------------------------------------


def _grants_by_role(run: Run) -> dict[str, dict[str, dict[str, Any]]]:
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for grant in run.of_type(GRANT):
        kind = grant.inputs["objectType"]
        assert kind not in found.setdefault(grant.inputs["role"], {}), (
            f"two Grants for {grant.inputs['role']} on {kind}: they would revoke each other"
        )
        found[grant.inputs["role"]][kind] = grant.inputs
    return found


def test_supabase_api_roles_get_exactly_what_the_app_needs(runs):
    grants = _grants_by_role(runs["local"])
    assert grants["authenticated"]["table"]["privileges"] == ["SELECT"]
    assert grants["authenticated"]["table"]["objects"] == ["memberships"]  # RLS decides the rows
    assert set(grants["service_role"]["table"]["privileges"]) == {"SELECT", "INSERT", "UPDATE", "DELETE"}
    assert "objects" not in grants["service_role"]["table"]  # every table in app
    # anon: nothing, enforced (an empty Grant revokes strays) and no USAGE on the schema.
    assert grants["anon"] == {"table": grants["anon"]["table"]}
    assert grants["anon"]["table"]["privileges"] == []
    for role in ("app_writer", "app_reader", "service_role", "authenticated"):
        assert grants[role]["schema"]["privileges"] == ["USAGE"]
        assert grants[role]["schema"]["schema"] == "app"


def test_default_privileges_cover_future_tables_and_are_deleted_before_replaced(runs):
    run = runs["local"]
    defaults = run.of_type(DEFAULT_PRIVILEGES)
    assert {(d.inputs["role"], d.inputs["objectType"]) for d in defaults} >= {
        ("app_writer", "table"),
        ("app_reader", "table"),
        ("service_role", "table"),
    }
    keys = [(d.inputs["role"], d.inputs["objectType"], d.inputs["schema"], d.inputs["owner"]) for d in defaults]
    assert len(keys) == len(set(keys))
    for default in defaults:
        assert default.inputs["owner"] == "postgres"  # the role that runs the migrations
        # Without this, a replacement grants anew and then the old delete REVOKEs ALL.
        assert default.delete_before_replace is True


def test_a_role_listed_twice_in_the_grants_is_refused(checkout):
    with program_modules(checkout):
        from components.grants import DEFAULT_ACCESS, Grants, GrantsArgs, TableAccess

        pulumi.runtime.set_mocks(ProgramMocks(), project="appdb", stack="dev", preview=False)
        twice = (*DEFAULT_ACCESS, TableAccess("app_reader", ("SELECT",), tables=("memberships",)))
        with pytest.raises(ValueError, match=r"access\[5\]\.role: 'app_reader' is listed twice"):
            Grants("grants", GrantsArgs(database="postgres", schema="app", owner="postgres", access=twice))


# --- rule 4: prod protects its data ------------------------------------------------------


def test_prod_protects_the_schema_and_never_the_migrations(runs):
    run = runs["prod"]
    assert run.one(SCHEMA, "schema").protect is True
    for command in run.commands.values():
        assert command.protect is False
    for stack in ("local", "dev"):
        assert not runs[stack].one(SCHEMA, "schema").protect


def test_prod_reverts_carry_no_permission_to_lose_data(runs):
    for name, command in runs["prod"].commands.items():
        if name.startswith("migration-"):
            migration_id = name.removeprefix("migration-")
            assert command.inputs["delete"] == f"./bin/appdb revert {migration_id} --fork-server"
    for stack in ("local", "dev"):
        assert runs[stack].commands["migration-027"].inputs["delete"] == "./bin/appdb revert 027 --allow-data-loss --fork-server"


def test_stacks_differ_only_in_their_config(checkout):
    """The same config under another stack name gives the same resources: no `if stack == "prod"`."""
    as_dev = run_program(checkout, "dev", stack_config("prod"))
    as_prod = run_program(checkout, "prod", stack_config("prod"))
    def shape(run: Run) -> list[tuple]:
        return sorted((r.type, r.name, json.dumps(reveal(r.inputs), sort_keys=True), r.protect) for r in run.registrations)

    assert shape(as_dev) == shape(as_prod)


# --- rule 1: only removing a migration runs its revert ---------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_commands_find_the_interpreter_through_bin_appdb_relatively(runs, stack):
    for name, command in runs[stack].commands.items():
        for phase in ("create", "update", "delete"):
            if phase in command.inputs and command.inputs[phase] != RECORDED:
                assert command.inputs[phase].startswith("./bin/appdb "), f"{name}.{phase}"
        # No `dir` (machine-specific) and no `interpreter`: /bin/sh runs ./bin/appdb from the project dir.
        assert "dir" not in command.inputs and "interpreter" not in command.inputs
        # `triggers` is the one input that replaces a command (pulumi-command 1.x).
        assert "triggers" not in command.inputs
        assert command.replace_on_changes == ["triggers[*]"]
        assert command.delete_before_replace is False


def test_the_local_stack_takes_the_backend_password_from_the_environment_as_a_secret(checkout, monkeypatch):
    """Pulumi.local.yaml holds no password: bin/deploy-local exports the local cluster's own."""
    config = stack_config("local", dbPassword="", backendPassword="")  # as Pulumi.local.yaml holds them
    monkeypatch.setenv("APPDB_BACKEND_PASSWORD", BACKEND_PASSWORD)
    monkeypatch.setenv("PGPASSWORD", DB_PASSWORD)
    run = run_program(checkout, "local", config)
    assert secret_values(run.one(ROLE, "roles-backend").inputs["password"]) == [BACKEND_PASSWORD]
    assert "password" not in run.one(PROVIDER, "db").inputs  # the provider reads PGPASSWORD itself
    for name, command in run.commands.items():
        assert "PGPASSWORD" not in env(command), name
    for registration in run.registrations:
        assert DB_PASSWORD not in json.dumps(reveal(registration.inputs)), registration.name
        for text in plain_strings(registration.inputs):
            assert BACKEND_PASSWORD not in text, registration.name


def test_without_a_backend_password_anywhere_the_program_says_where_to_set_it(checkout, monkeypatch):
    config = stack_config("dev", backendPassword="")
    monkeypatch.delenv("APPDB_BACKEND_PASSWORD", raising=False)
    with pytest.raises(Exception, match="backendPassword is not set.*APPDB_BACKEND_PASSWORD"):
        run_program(checkout, "dev", config)


def test_without_db_password_in_config_the_password_comes_from_the_environment_only(checkout):
    """CI sets PGPASSWORD; then no resource input, and so no state, holds the deploy password."""
    config = stack_config("prod")
    del config["dbPassword"]
    run = run_program(checkout, "prod", config)

    provider = run.one(PROVIDER, "db")
    assert "password" not in provider.inputs
    for name, command in run.commands.items():
        assert "PGPASSWORD" not in env(command), name
        assert env(command)["PGUSER"] == "postgres"
    for registration in run.registrations:
        assert DB_PASSWORD not in json.dumps(reveal(registration.inputs)), registration.name


@pytest.mark.parametrize("stack", STACKS)
def test_commands_reach_the_stack_database_even_with_database_url_in_the_shell(runs, stack):
    """The engine prefers DATABASE_URL to PG*, and libpq PGHOSTADDR to PGHOST: an inherited one
    would migrate another database (or send the password elsewhere)."""
    for name, command in runs[stack].commands.items():
        variables = env(command)
        assert variables["DATABASE_URL"] == variables["PGHOSTADDR"] == "", name
        assert variables["PGHOST"] and variables["PGUSER"], name


def test_an_empty_pghostaddr_is_unset_for_libpq(db):
    """What the commands' environment relies on: blanking it does not break the connection."""
    result = db.run_cli("status", env={"PGHOSTADDR": ""})
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("stack", STACKS)
def test_migration_commands_carry_their_own_file_and_checksum(runs, stack):
    command = runs[stack].commands["migration-028"]
    from hashlib import sha256

    text = MIGRATIONS["028_fix_memberships_unique_constraint.sql"]
    assert env(command)["APPDB_MIGRATION_CHECKSUM"] == sha256(text.encode()).hexdigest()
    assert env(command)["APPDB_MIGRATION_FILE"] == "028_fix_memberships_unique_constraint.sql"


def _command_inputs(run: Run) -> dict[str, Any]:
    return {r.urn.split("::")[-1]: comparable(r) for r in run.of_type(COMMAND)}


def test_moving_the_checkout_changing_python_or_rotating_passwords_changes_no_command(tmp_path, monkeypatch):
    first = make_checkout(tmp_path / "home" / "ada" / "src" / "appdb")
    second = make_checkout(tmp_path / "srv" / "ci" / "build-7" / "appdb")
    monkeypatch.setattr(sys, "executable", "/opt/python-a/bin/python3")
    monkeypatch.setenv("VIRTUAL_ENV", "/opt/python-a")
    a = run_program(first, "dev", stack_config("dev"))
    monkeypatch.setattr(sys, "executable", "/usr/local/other/bin/python3.12")
    monkeypatch.setenv("VIRTUAL_ENV", "/usr/local/other")
    b = run_program(
        second, "dev", stack_config("dev", dbPassword="rotated-db-secret", backendPassword="rotated-backend-secret")
    )

    assert set(_command_inputs(a)) == {"migrations-apply", "migration-027", "migration-028", "verify"}
    assert _command_inputs(a) == _command_inputs(b)
    # Not vacuous: the secrets did differ, and only secret-wrapped values may.
    assert env(a.commands["migration-027"])["PGPASSWORD"] == DB_PASSWORD
    assert env(b.commands["migration-027"])["PGPASSWORD"] == "rotated-db-secret"
    for run, machine in ((a, ["/opt/python-a", str(first)]), (b, ["/usr/local/other", str(second)])):
        for registration in run.registrations:
            for text in plain_strings(reveal(registration.inputs)):
                assert not any(m in text for m in machine), f"{registration.name} holds a path: {text}"
                assert not text.startswith("/"), f"{registration.name} holds an absolute path: {text}"


def test_editing_an_applied_migration_is_an_update_that_the_engine_refuses(tmp_path):
    before = run_program(make_checkout(tmp_path / "a"), "dev", stack_config("dev"))
    edited = dict(MIGRATIONS)
    edited["028_fix_memberships_unique_constraint.sql"] += "-- edited after it was applied\n"
    after = run_program(make_checkout(tmp_path / "b", edited), "dev", stack_config("dev"))

    old, new = before.commands["migration-028"], after.commands["migration-028"]
    assert old.urn == new.urn  # same resource, so an update and not a create + delete
    changed = {key for key in old.inputs if old.inputs[key] != new.inputs.get(key)}
    assert changed == {"environment"}  # not `triggers`, the only input that would replace it
    changed_env = {k for k in env(old) if env(old)[k] != env(new)[k]}
    assert changed_env == {"APPDB_MIGRATION_CHECKSUM"}
    # migrations-apply is updated too (the digest moved): it re-runs `apply`, which refuses a changed file.
    old_apply, new_apply = before.commands["migrations-apply"], after.commands["migrations-apply"]
    assert old_apply.urn == new_apply.urn and "triggers" not in new_apply.inputs
    assert {k for k in env(old_apply) if env(old_apply)[k] != env(new_apply)[k]} == {"APPDB_MIGRATIONS_DIGEST"}
    assert new_apply.inputs["update"] == "./bin/appdb apply"
    assert comparable(before.commands["migration-027"]) == comparable(after.commands["migration-027"])
    # Verification re-runs because a checksum under it changed.
    assert env(before.commands["verify"])["APPDB_DEPLOY_DIGEST"] != env(after.commands["verify"])["APPDB_DEPLOY_DIGEST"]


def test_removing_a_migration_removes_only_its_command(tmp_path):
    both = run_program(make_checkout(tmp_path / "a"), "dev", stack_config("dev"))
    only_027 = {k: v for k, v in MIGRATIONS.items() if k.startswith("027")}
    rolled_back = run_program(make_checkout(tmp_path / "b", only_027), "dev", stack_config("dev"))

    assert "migration-028" not in rolled_back.commands  # Pulumi deletes it: its delete runs the revert
    # The apply runs again (an update, before the deletes) and finds nothing pending.
    assert env(both.commands["migrations-apply"])["APPDB_MIGRATIONS_DIGEST"] != env(
        rolled_back.commands["migrations-apply"])["APPDB_MIGRATIONS_DIGEST"]
    assert "delete" not in rolled_back.commands["migrations-apply"].inputs
    assert comparable(both.commands["migration-027"]) == comparable(rolled_back.commands["migration-027"])
    assert both.commands["migration-028"].inputs["delete"] == "./bin/appdb revert 028 --allow-data-loss --fork-server"
    verify_before, verify_after = both.commands["verify"], rolled_back.commands["verify"]
    assert env(verify_before)["APPDB_DEPLOY_DIGEST"] != env(verify_after)["APPDB_DEPLOY_DIGEST"]
    assert rolled_back.urn(COMMAND, "migration-027") in verify_after.dependencies


def test_adding_a_migration_creates_its_command_and_runs_the_apply_again(tmp_path):
    """The apply's digest moves, so its update applies the new file; the older commands do not change."""
    before = run_program(make_checkout(tmp_path / "a"), "dev", stack_config("dev"))
    more = {**MIGRATIONS, "029_notes.sql": "ALTER TABLE app.memberships ADD COLUMN more text;\n"}
    after = run_program(make_checkout(tmp_path / "b", more), "dev", stack_config("dev"))
    assert set(after.commands) - set(before.commands) == {"migration-029"}
    old, new = before.commands["migrations-apply"], after.commands["migrations-apply"]
    assert {k for k in env(old) if env(old)[k] != env(new)[k]} == {"APPDB_MIGRATIONS_DIGEST"}
    for name in ("migration-027", "migration-028"):
        assert comparable(before.commands[name]) == comparable(after.commands[name]), name
    assert depends_on(after, after.commands["migration-029"], COMMAND, "migration-028")
    assert depends_on(after, after.commands["migrations-apply"], COMMAND, "migration-029")


def test_stacks_deployed_with_one_engine_process_per_migration_get_updates_never_replacements(runs):
    """The inputs such a stack holds for 028, before the apply moved into migrations-apply.

    Same URN; what differs is create and update alone, never ``triggers`` (the only input
    pulumi-command replaces on): the engine updates the command, running the new no-op,
    and its delete, the revert, is the same. migrations-apply is new: a create, which
    finds nothing pending.
    """
    command = runs["dev"].commands["migration-028"]
    assert command.urn.endswith("$command:local:Command::migration-028")
    previous = {**comparable(command), "create": "./bin/appdb apply --only 028", "update": "./bin/appdb apply --only 028"}
    changed = {key for key in previous if previous[key] != comparable(command)[key]}
    assert changed == {"create", "update"}
    assert "triggers" not in command.inputs and set(command.replace_on_changes) <= {"triggers[*]"}
    assert command.delete_before_replace is False


def test_unrelated_config_changes_no_migration_command(tmp_path):
    checkout = make_checkout(tmp_path / "a")
    base = run_program(checkout, "dev", stack_config("dev"))
    other = run_program(checkout, "dev", stack_config("dev", backendRole="api_backend", protectSchema=True))
    for name in ("migrations-apply", "migration-027", "migration-028"):
        assert comparable(base.commands[name]) == comparable(other.commands[name])
    # A role setting changed, so verification runs again.
    assert env(base.commands["verify"])["APPDB_DEPLOY_DIGEST"] != env(other.commands["verify"])["APPDB_DEPLOY_DIGEST"]


# --- rule 5: a no-op up shows no changes -----------------------------------------------


def test_running_the_program_twice_registers_identical_inputs(tmp_path):
    checkout = make_checkout(tmp_path / "a")
    first = run_program(checkout, "local", stack_config("local"))
    second = run_program(checkout, "local", stack_config("local"))
    def shape(run: Run) -> list[tuple]:
        return sorted(
            (r.urn, json.dumps(r.inputs, sort_keys=True), sorted(r.dependencies), r.protect) for r in run.registrations
        )

    assert shape(first) == shape(second)


def test_a_grant_setting_changes_the_verification_digest(tmp_path, monkeypatch):
    checkout = make_checkout(tmp_path / "a")
    base = run_program(checkout, "dev", stack_config("dev"))
    access_py = checkout / "appdb" / "access.py"
    access_py.write_text(
        access_py.read_text().replace(
            'TableAccess(READER, ("SELECT",), future=True)', 'TableAccess(READER, ("SELECT", "REFERENCES"), future=True)'
        )
    )
    changed = run_program(checkout, "dev", stack_config("dev"))
    assert env(base.commands["verify"])["APPDB_DEPLOY_DIGEST"] != env(changed.commands["verify"])["APPDB_DEPLOY_DIGEST"]
    assert comparable(base.commands["migration-027"]) == comparable(changed.commands["migration-027"])


# --- adoption and validation --------------------------------------------------------------


def test_adopted_roles_are_imported_and_never_dropped(checkout):
    run = run_program(checkout, "prod", stack_config("prod", adoptRoles=["app_writer", "app_reader"]))
    for key, name in (("writer", "app_writer"), ("reader", "app_reader")):
        role = run.one(ROLE, f"roles-{key}")
        assert role.import_id == name
        assert role.retain_on_delete is True
    backend = run.one(ROLE, "roles-backend")
    assert backend.import_id == "" and not backend.retain_on_delete


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"backendRole": "App-Backend"}, r"appdb:backendRole: 'App-Backend' is not a valid role"),
        ({"backendRole": "app_writer"}, "appdb:backendRole: 'app_writer' is not a login of the backend's own"),
        ({"adoptRoles": ["nobody"]}, r"appdb:adoptRoles: 'nobody' is not a role this program manages"),
        ({"adminRole": "postgres; drop"}, "appdb:adminRole: 'postgres; drop' is not a valid"),
    ],
)
def test_bad_names_fail_with_a_message_naming_the_input(checkout, override, message):
    with pytest.raises(Exception, match=message):
        run_program(checkout, "dev", stack_config("dev", **override))


def test_components_keep_passwords_secret_even_when_handed_plain_strings(checkout):
    """Defense in depth: a password that reaches a component as a plain string still leaves it secret."""
    mocks = ProgramMocks()
    monitor = CapturingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project="appdb", stack="dev", preview=False, monitor=monitor)
    with program_modules(checkout):
        from components import Database, DatabaseArgs, LoginRole, Roles, RolesArgs

        @pulumi.runtime.test
        def build():
            db = Database("db", DatabaseArgs(host="h", password="plain-db-password"))
            Roles("roles", RolesArgs(login_roles=[LoginRole("backend", "app_backend", "plain-backend-password")]))
            environment = pulumi.Output.from_input(db.command_environment())
            return pulumi.Output.all(environment.is_secret(), db.password.is_secret()).apply(
                lambda flags: assertions.append(flags)
            )

        assertions: list[Any] = []
        build()
        assert assertions == [[True, True]]
    for registration in monitor.registrations:
        for text in plain_strings(registration.inputs):
            assert "plain-db-password" not in text and "plain-backend-password" not in text, registration.name


def test_the_project_migrations_become_one_command_each_in_version_order(tmp_path):
    """The real sql/ folder, discovered by appdb.migration.discover as the program does."""
    checkout = make_checkout(tmp_path / "appdb", migrations={})
    shutil.rmtree(checkout / "sql")
    shutil.copytree(PROJECT / "sql", checkout / "sql")
    with program_modules(checkout):
        from appdb.migrate.files import discover

        expected = [m.id for m in discover(checkout / "sql")]
    assert expected[:2] == ["027", "028"]
    run = run_program(checkout, "prod", stack_config("prod"))
    names = [r.name for r in run.of_type(COMMAND) if r.name.startswith("migration-")]
    assert names == [f"migration-{migration_id}" for migration_id in expected]
    assert [m["id"] for m in run.exports["migrations"][0]] == expected
    for earlier, later in zip(expected, expected[1:]):
        assert depends_on(run, run.commands[f"migration-{later}"], COMMAND, f"migration-{earlier}")


# --- a rename that keeps the version is at most an update ------------------------------------

# Versions with one, two, three and four digits, so every spelling rule is met.
RENAMED_MIGRATIONS = {
    "001_first.sql": "CREATE TABLE app.first (id int);\n",
    "027_memberships.sql": MIGRATIONS["027_memberships.sql"],
    "028_fix_memberships_unique_constraint.sql": MIGRATIONS["028_fix_memberships_unique_constraint.sql"],
    "100_hundredth.sql": "ALTER TABLE app.first ADD COLUMN note text;\n",
    "1000_thousandth.sql": "ALTER TABLE app.first ADD COLUMN other text;\n",
}


def spellings(filename: str) -> list[str]:
    """Every other way to write the file's version with up to five digits: 1, 01, 001, 0001, 00001."""
    digits, _, rest = filename.partition("_")
    number = int(digits)
    written = {f"{number:0{width}d}" for width in range(1, 6)}
    return sorted(f"{spelling}_{rest}" for spelling in written if spelling != digits)


def renames() -> list[tuple[str, str]]:
    return [(old, new) for old in RENAMED_MIGRATIONS for new in spellings(old)]


@pytest.fixture(scope="module")
def before_rename(tmp_path_factory) -> Run:
    return run_program(make_checkout(tmp_path_factory.mktemp("rename") / "a", RENAMED_MIGRATIONS), "dev",
                       stack_config("dev"))


@pytest.mark.parametrize(("old", "new"), renames(), ids=[f"{o.split('_')[0]}->{n.split('_')[0]}" for o, n in renames()])
def test_renaming_a_file_to_another_spelling_of_its_version_is_at_most_an_update(before_rename, tmp_path, old, new):
    """Same URNs, so Pulumi creates and deletes nothing: no delete, so no revert runs.

    The only input that changes is the file's name in the environment (an update of a
    no-op), never ``triggers``, the only input that would replace a command, and never a
    command line; ``migrations-apply``'s digest holds versions, so it does not run at all.
    """
    migrations = {new if name == old else name: text for name, text in RENAMED_MIGRATIONS.items()}
    after = run_program(make_checkout(tmp_path / "b", migrations), "dev", stack_config("dev"))

    assert sorted(r.urn for r in after.registrations) == sorted(r.urn for r in before_rename.registrations)
    for name, was in before_rename.commands.items():
        now = after.commands[name]
        # pulumi-command itself marks triggers as replace-on-change; the program sets none.
        assert "triggers" not in now.inputs and set(now.replace_on_changes) <= {"triggers[*]"}, name
        assert (now.protect, now.delete_before_replace, set(now.dependencies)) == (
            was.protect, was.delete_before_replace, set(was.dependencies)), name
        inputs_was, inputs_now = comparable(was), comparable(now)
        changed = {k for k in inputs_was if inputs_was[k] != inputs_now[k]}
        changed_env = {k for k in env(was) if env(was)[k] != env(now)[k]}
        if env(was).get("APPDB_MIGRATION_FILE") == old:
            assert (changed, changed_env) == ({"environment"}, {"APPDB_MIGRATION_FILE"}), name
        else:
            assert inputs_now == inputs_was, name
    renamed = after.commands[f"migration-{int(old.split('_')[0]):03d}"]
    assert env(renamed)["APPDB_MIGRATION_FILE"] == new
    # The output and the verification digest hold the version, so they do not move either.
    assert after.exports["migrations"] == before_rename.exports["migrations"]
    assert env(after.commands["verify"])["APPDB_DEPLOY_DIGEST"] == env(before_rename.commands["verify"])["APPDB_DEPLOY_DIGEST"]


def test_every_migration_is_named_and_run_by_its_version_in_three_digits_or_more(before_rename):
    names = [r.name for r in before_rename.of_type(COMMAND) if r.name.startswith("migration-")]
    assert names == ["migration-001", "migration-027", "migration-028", "migration-100", "migration-1000"]
    command = before_rename.commands["migration-001"]
    assert (command.inputs["create"], command.inputs["delete"]) == (RECORDED, "./bin/appdb revert 001 --allow-data-loss --fork-server")
    assert [m["id"] for m in before_rename.exports["migrations"][0]] == ["001", "027", "028", "100", "1000"]


def test_the_shipped_migrations_keep_the_urns_the_stacks_already_have(tmp_path):
    checkout = make_checkout(tmp_path / "appdb", migrations={})
    shutil.rmtree(checkout / "sql")
    shutil.copytree(PROJECT / "sql", checkout / "sql")
    run = run_program(checkout, "prod", stack_config("prod"))
    urns = [r.urn for r in run.of_type(COMMAND) if r.name.startswith("migration-")]
    assert urns[:4] == [
        f"urn:pulumi:prod::appdb::appdb:index:Migrations$command:local:Command::migration-{version}"
        for version in ("027", "028", "029", "030")
    ]


# --- the chain of migrations and the SDK's cycle check (issue 20) ----------------------------------


class _Node:
    """Stands for a resource: the SDK's cycle check only records and follows an attribute on it."""


def _chain(length: int) -> tuple[list[_Node], _Node]:
    """``length`` nodes, each depending on the one before, the first on two others (the schema and
    the roles), and a last one on all of them (``migrations-apply``), as components/migrations.py
    declares them; every declaration must pass."""
    from pulumi.runtime.resource_cycle_breaker import declare_dependency

    before = [_Node(), _Node()]
    nodes: list[_Node] = []
    previous = before
    for _ in range(length):
        node = _Node()
        assert all(declare_dependency(node, dependency) for dependency in previous)
        nodes.append(node)
        previous = [node]
    last = _Node()
    assert all(declare_dependency(last, dependency) for dependency in [*before, *nodes])
    return [*before, *nodes], last


def test_the_sdk_s_cycle_check_walks_a_chain_past_python_s_recursion_limit_and_still_finds_a_cycle():
    """The SDK's own walk recursed once a migration: past about 990 a RecursionError stopped every
    preview, and a chain of n cost n³/6 steps (components/sdk_at_scale.py)."""
    from pulumi.runtime import resource_cycle_breaker

    from components import sdk_at_scale

    sdk_at_scale.for_a_long_chain()
    assert resource_cycle_breaker._reachable is sdk_at_scale._reachable
    nodes, last = _chain(1200)
    assert not resource_cycle_breaker.declare_dependency(nodes[0], last)  # the cycle is refused
    assert not resource_cycle_breaker.declare_dependency(nodes[600], nodes[1199])
    assert resource_cycle_breaker.declare_dependency(_Node(), last)


def test_the_pinned_sdk_still_looks_its_steps_up_by_name_on_every_call():
    """Else replacing them would change nothing, and nothing else would say so."""
    from pulumi.runtime import resource, resource_cycle_breaker, stack

    assert "_reachable" in resource_cycle_breaker.declare_dependency.__code__.co_names
    assert "wait_for_rpcs" in stack.run_pulumi_func.__code__.co_names
    assert "_get_stack_trace" in resource.register_resource.__code__.co_names
    assert "_get_stack_trace" in resource.read_resource.__code__.co_names


def test_running_the_program_puts_the_sdk_s_steps_made_cheaper_in_their_place(checkout, monkeypatch):
    from pulumi.runtime import resource, resource_cycle_breaker, stack

    from components import sdk_at_scale

    # As a fresh process has them, whatever an earlier test installed.
    monkeypatch.setattr(resource_cycle_breaker, "_reachable", sdk_at_scale._SDK_REACHABLE)
    monkeypatch.setattr(stack, "wait_for_rpcs", sdk_at_scale._SDK_WAIT_FOR_RPCS)
    monkeypatch.setattr(resource, "_get_stack_trace", sdk_at_scale._SDK_STACK_TRACE)
    run_program(checkout, "dev", stack_config("dev"))
    installed = {"resource_cycle_breaker": resource_cycle_breaker._reachable, "stack": stack.wait_for_rpcs,
                 "resource": resource._get_stack_trace}
    for module, function in installed.items():
        assert function.__module__ == "components.sdk_at_scale"
        # However many copies of the project were run, the SDK's own is one step away.
        assert function.sdk_original.__module__ == f"pulumi.runtime.{module}"


def test_the_walk_answers_as_the_sdk_s_own_on_random_graphs():
    import random

    from components import sdk_at_scale

    rng = random.Random(20)
    for _ in range(500):
        nodes = [_Node() for _ in range(rng.randint(1, 10))]
        for node in nodes:  # any graph: cycles and self-loops too
            node._direct_computed_dependencies = set(rng.sample(nodes, rng.randint(0, len(nodes))))
        for start in nodes:
            for end in nodes:
                assert sdk_at_scale._reachable(start, end) == sdk_at_scale._SDK_REACHABLE(start, end)


def test_the_sdk_waits_for_a_chain_of_registrations_as_one_not_one_output_at_a_time(monkeypatch):
    """As a program's chain of resources registers: each registration an RPC that awaits the one
    before, each with outputs of its own. The SDK's wait found no registration begun, and waited on
    the outputs, one asyncio.wait over all of them for each that completed (components/sdk_at_scale.py)."""
    import asyncio

    from pulumi.runtime import settings, stack

    from components import sdk_at_scale

    sdk_at_scale.for_a_long_chain()
    waits: list[int] = []
    real_wait = asyncio.wait

    async def counted(tasks, *args, **kwargs):
        waits.append(len(tasks))
        return await real_wait(tasks, *args, **kwargs)

    async def program(length: int) -> list[int]:
        manager = settings._get_rpc_manager()
        previous: asyncio.Future = asyncio.get_running_loop().create_future()
        previous.set_result(0)
        done: list[int] = []
        for index in range(length):
            async def register(before=previous, index=index) -> None:
                await before
                await asyncio.sleep(0)  # the RPC
                done.append(index)

            registered = asyncio.ensure_future(manager.do_rpc("register resource", register)())
            for _ in range(5):  # its outputs, tracked as the SDK tracks every Output
                output = asyncio.ensure_future(asyncio.shield(registered))
                settings.SETTINGS.outputs.add(output)
                output.add_done_callback(settings.SETTINGS.outputs.discard)
            previous = registered
        await stack.wait_for_rpcs()
        return done

    monkeypatch.setattr(asyncio, "wait", counted)
    settings._get_rpc_manager().clear()
    assert asyncio.run(program(300)) == list(range(300))
    assert len(waits) <= 3, waits[:10]


# --- each resource's record in the state (issue 20) ---------------------------------------------


def test_each_resource_carries_the_sdk_s_trace_down_to_the_program_s_line(checkout, monkeypatch):
    """The SDK sent thirteen frames with each migration's command, down to the language host's,
    and the engine keeps them in the state it writes whole at every step: a third of a command's
    record, with folders of the deployer's machine (components/sdk_at_scale.py). What is kept is
    the SDK's own trace down to __main__.py's line, so its source position is the SDK's too."""
    from pulumi.runtime import resource

    from components import sdk_at_scale

    made: list[tuple[str, ...]] = []  # the SDK's whole trace of each resource, before the cut

    sdk_own = sdk_at_scale._SDK_STACK_TRACE

    def recorded():
        trace = sdk_own()
        made.append(tuple(f"{frame.pc.uri}#{frame.pc.line}" for frame in trace.frames))
        return trace

    # What the checkout's own copy of sdk_at_scale finds as the SDK's, as it is imported.
    monkeypatch.setattr(resource, "_get_stack_trace", recorded)
    run = run_program(checkout, "dev", stack_config("dev"))
    program = (checkout / "__main__.py").as_uri()
    cut = Counter()
    for whole in made:
        ends = [index for index, frame in enumerate(whole) if frame.partition("#")[0] == program]
        if not ends:  # the stack's own resource, which the SDK makes before running the program
            assert "/site-packages/pulumi/runtime/" in whole[0], whole
            continue
        cut[whole[: ends[-1] + 1]] += 1
        assert len(whole) > ends[-1] + 1  # and the SDK's frames below it are gone
    assert cut == Counter(tuple(r.stack_trace) for r in run.registrations)
    traces = {r.name if r.type != "pulumi:providers:postgresql" else "provider": r.stack_trace for r in run.registrations}
    for registration in run.registrations:
        assert registration.source_position == registration.stack_trace[0]  # the SDK's, from its first frame
    where = {name: [frame.partition("#")[0].rpartition("/")[2] for frame in trace] for name, trace in traces.items()}
    assert where["migration"] == ["__main__.py"]  # a component the program makes
    assert where["migration-027"] == ["migrations.py", "__main__.py"]
    assert where["provider"] == ["provider.py", "provider.py", "database.py", "__main__.py"]


def test_the_trace_is_cut_below_the_program_s_last_frame_or_its_first():
    from pulumi.runtime.proto import source_pb2

    from components import sdk_at_scale

    def trace(*files: str) -> source_pb2.StackTrace:
        return source_pb2.StackTrace(frames=[source_pb2.StackFrame(pc=source_pb2.SourcePosition(uri=f"file:///{name}", line=1))
                                             for name in files])

    def cut(program: str, *files: str) -> list[str]:
        made = sdk_at_scale._down_to(f"file:///{program}")
        sdk_at_scale._SDK_STACK_TRACE, saved = (lambda: trace(*files)), sdk_at_scale._SDK_STACK_TRACE
        try:
            return [frame.pc.uri.rpartition("/")[2] for frame in made().frames]
        finally:
            sdk_at_scale._SDK_STACK_TRACE = saved

    assert cut("main", "a", "main", "b", "main", "sdk", "asyncio") == ["a", "main", "b", "main"]
    assert cut("main", "main", "sdk") == ["main"]
    assert cut("main", "a", "sdk") == ["a"]  # no frame of the program: the SDK's first, its source position
    assert cut("main") == []
    # A program path the SDK could make no URI of: the frames it could not place either stay below.
    made = sdk_at_scale._down_to("")
    sdk_at_scale._SDK_STACK_TRACE, saved = (lambda: source_pb2.StackTrace(frames=[
        source_pb2.StackFrame(pc=source_pb2.SourcePosition(uri="file:///a", line=1)), source_pb2.StackFrame(),
        source_pb2.StackFrame()])), sdk_at_scale._SDK_STACK_TRACE
    try:
        assert len(made().frames) == 1
    finally:
        sdk_at_scale._SDK_STACK_TRACE = saved
