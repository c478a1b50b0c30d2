"""The appdb Pulumi program: the `app` schema, its roles and grants, the migrations, and verification.

Stacks differ only in their stack files (Pulumi.<stack>.yaml); every key is declared,
with its default, in Pulumi.yaml. See docs/pulumi.md.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import pulumi

from appdb.access import GROUP_ROLES, RESERVED_ROLE_PREFIXES, SUPABASE_ROLES
from appdb.errors import AppdbError
from appdb.libpq import SSLMODES
from appdb.local.postgres import SUPPORTED as SUPPORTED_MAJORS
from appdb.migrate.files import discover
from components import (
    AppSchema,
    AppSchemaArgs,
    Database,
    DatabaseArgs,
    Grants,
    GrantsArgs,
    LoginRole,
    Migrations,
    MigrationsArgs,
    Roles,
    RolesArgs,
    Verification,
    VerificationArgs,
    sdk_at_scale,
    validation,
)
from components.commands import digest


@dataclass(frozen=True)
class Settings:
    """Every key of the stack file, read once, before anything is built (Pulumi.yaml declares them)."""

    host: str
    port: int
    database: str
    user: str
    admin_role: str
    # unset or empty: PGPASSWORD from the environment (CI, bin/deploy-local), never in the state
    db_password: str | None
    sslmode: str
    sslrootcert: str | None  # verify-full/verify-ca: the CA that signed the server
    connect_timeout: int
    protect_schema: bool
    allow_data_loss: bool
    backend_role: str
    backend_password: str
    adopt_roles: list[str]
    postgres_major: int


def read_settings(config: pulumi.Config) -> Settings:
    """The stack's settings. The two passwords are read as plain text only to tell empty from
    set (Pulumi.yaml gives them an empty default); they become secret Outputs where they are used."""
    backend_password = config.get("backendPassword") or os.environ.get("APPDB_BACKEND_PASSWORD")
    if not backend_password:
        raise pulumi.RunError(
            "backendPassword is not set: 'pulumi config set --secret backendPassword' (dev, prod), "
            "or APPDB_BACKEND_PASSWORD in the environment (bin/deploy-local sets it for the local stack)"
        )
    settings = Settings(
        host=config.require("dbHost"),
        port=config.require_int("dbPort"),
        database=config.require("dbName"),
        user=config.require("dbUser"),
        admin_role=config.require("adminRole"),
        db_password=config.get("dbPassword") or None,
        sslmode=config.require("sslMode"),
        sslrootcert=config.get("sslRootCert") or None,
        connect_timeout=config.require_int("connectTimeout"),
        protect_schema=config.require_bool("protectSchema"),
        allow_data_loss=config.require_bool("allowDataLoss"),
        backend_role=config.require("backendRole"),
        backend_password=backend_password,
        adopt_roles=config.require_object("adoptRoles"),
        postgres_major=config.require_int("postgresMajor"),
    )
    try:
        check_settings(settings)
    except ValueError as error:
        raise pulumi.RunError(f"{error} (the stack file: Pulumi.<stack>.yaml)") from None
    return settings


def check_settings(settings: Settings) -> None:
    """Each stack key checked where it is read: a bad value is one line that names its key, never a
    traceback from a component that calls it by another name."""
    for key, value in (("dbHost", settings.host), ("dbName", settings.database), ("dbUser", settings.user)):
        if not value.strip():
            raise ValueError(f"appdb:{key} is empty: set it (pulumi config set {key} VALUE)")
    validation.port(settings.port, "appdb:dbPort")
    if settings.sslmode not in SSLMODES:
        raise ValueError(f"appdb:sslMode: {settings.sslmode!r} is not one of {', '.join(SSLMODES)}")
    if not 0 < settings.connect_timeout <= 60:
        raise ValueError(f"appdb:connectTimeout: {settings.connect_timeout!r} must be from 1 to 60 seconds")
    validation.identifier(settings.admin_role, "appdb:adminRole")
    validation.identifier(settings.backend_role, "appdb:backendRole")
    if settings.backend_role in SUPABASE_ROLES or settings.backend_role.startswith(RESERVED_ROLE_PREFIXES) or \
            settings.backend_role in (settings.admin_role, *GROUP_ROLES.values()):
        raise ValueError(f"appdb:backendRole: {settings.backend_role!r} is not a login of the backend's own: "
                         "Supabase, PostgreSQL or this program has a role of that name; choose another (e.g. app_backend)")
    managed = [*GROUP_ROLES.values(), settings.backend_role]
    if not isinstance(settings.adopt_roles, list) or not all(isinstance(r, str) for r in settings.adopt_roles):
        raise ValueError(f"appdb:adoptRoles must be a list of role names, such as [\"app_writer\"], "
                         f"not {settings.adopt_roles!r}")
    for role in settings.adopt_roles:
        if role not in managed:
            raise ValueError(f"appdb:adoptRoles: {role!r} is not a role this program manages ({', '.join(managed)})")
    if settings.postgres_major not in SUPPORTED_MAJORS:
        raise ValueError(f"appdb:postgresMajor: {settings.postgres_major!r} is not a major Supabase runs "
                         f"({' or '.join(map(str, SUPPORTED_MAJORS))})")


def read_migrations() -> list:
    """sql/, parsed once; a file the engine refuses is its one-line message, not a traceback."""
    try:
        return discover(Path("sql"))
    except AppdbError as error:
        raise pulumi.RunError(str(error)) from None


settings = read_settings(pulumi.Config())
migration_files = read_migrations()
# Each resource's record in the state without the frames below this program's line that made it.
sdk_at_scale.smaller_state(__file__)

database = Database(
    "db",
    DatabaseArgs(
        host=settings.host,
        port=settings.port,
        database=settings.database,
        username=settings.user,
        role=settings.admin_role,
        password=None if settings.db_password is None else pulumi.Output.secret(settings.db_password),
        sslmode=settings.sslmode,
        sslrootcert=settings.sslrootcert,
        connect_timeout=settings.connect_timeout,
    ),
)
postgres = pulumi.ResourceOptions(providers=[database.provider])

schema = AppSchema(
    "schema",
    AppSchemaArgs(database=database.args.database, owner=settings.admin_role, protect=settings.protect_schema),
    opts=postgres,
)
roles = Roles(
    "roles",
    RolesArgs(
        login_roles=[LoginRole(key="backend", name=settings.backend_role, password=pulumi.Output.secret(settings.backend_password))],
        adopt=settings.adopt_roles,
    ),
    opts=postgres,
)
migrations = Migrations(
    "migration",
    MigrationsArgs(
        migrations=migration_files,
        environment=database.command_environment(),
        allow_data_loss=settings.allow_data_loss,
        after=[schema, roles],
    ),
)
grants = Grants(
    "grants",
    GrantsArgs(
        database=database.args.database,
        schema=schema.name,
        owner=settings.admin_role,
        requires=[schema, roles],
        tables_after=migrations.done,
    ),
    opts=postgres,
)
verification = Verification(
    "verify",
    VerificationArgs(
        environment=database.command_environment(),
        digest=digest({"migrations": migrations.applied, "roles": roles.settings, "grants": grants.settings}),
        after=[*migrations.done, grants],
    ),
)

backend_login = database.login_for(settings.backend_role)
pulumi.export("verification", verification.result)
pulumi.export("migrations", migrations.applied)
pulumi.export(
    "backend",
    {
        "user": backend_login,
        "host": database.args.host,
        "port": database.args.port,
        "database": database.args.database,
        "sslmode": database.args.sslmode,
    },
)
pulumi.export(
    "backendUrl",
    f"postgresql://{backend_login}@{database.args.host}:{database.args.port}/{database.args.database}"
    f"?sslmode={database.args.sslmode}",
)
pulumi.export("schema", {"name": schema.name, "protected": settings.protect_schema})
pulumi.export("revertsAllowDataLoss", settings.allow_data_loss)
# The PostgreSQL major version the stack states its database runs (the local cluster runs it).
pulumi.export("postgresMajor", settings.postgres_major)
