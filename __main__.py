"""The appdb Pulumi program: the `app` schema, its roles and grants, the migrations, and verification.

Stacks differ only in their stack files (Pulumi.<stack>.yaml); every key is declared,
with its default, in Pulumi.yaml. See docs/pulumi.md.
"""

import os
from pathlib import Path

import pulumi

from appdb.errors import AppdbError
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
)
from components.validation import digest

config = pulumi.Config()
try:
    # A file that cannot be read (not UTF-8, transaction control, a malformed marker) is the
    # engine's one-line message, not a Python traceback in the middle of Pulumi's output.
    migration_files = discover(Path("sql"))
except AppdbError as error:
    raise pulumi.RunError(str(error)) from None
admin_role = config.require("adminRole")
# The two secrets. The CLI wants a value for every declared secret, so a stack that takes
# them from the environment holds encrypted empty ones (Pulumi.local.yaml): empty = unset.
# Read as plain text only to tell empty from set; they become secret Outputs right here.
db_password = config.get("dbPassword") or None
backend_password = config.get("backendPassword") or os.environ.get("APPDB_BACKEND_PASSWORD") or None
if backend_password is None:
    raise pulumi.RunError(
        "backendPassword is not set: 'pulumi config set --secret backendPassword' (dev, prod), "
        "or APPDB_BACKEND_PASSWORD in the environment (bin/deploy-local sets it for the local stack)"
    )

database = Database(
    "db",
    DatabaseArgs(
        host=config.require("dbHost"),
        port=config.require_int("dbPort"),
        database=config.require("dbName"),
        username=config.require("dbUser"),
        role=admin_role,
        # unset or empty: PGPASSWORD from the environment (CI, bin/deploy-local), never in the state
        password=None if db_password is None else pulumi.Output.secret(db_password),
        sslmode=config.require("sslMode"),
        sslrootcert=config.get("sslRootCert") or None,  # verify-full/verify-ca: the CA that signed the server
        connect_timeout=config.require_int("connectTimeout"),
    ),
)
postgres = pulumi.ResourceOptions(providers=[database.provider])

schema = AppSchema(
    "schema",
    AppSchemaArgs(database=database.args.database, owner=admin_role, protect=config.require_bool("protectSchema")),
    opts=postgres,
)
backend_role = config.require("backendRole")
roles = Roles(
    "roles",
    RolesArgs(
        login_roles=[LoginRole(key="backend", name=backend_role, password=pulumi.Output.secret(backend_password))],
        adopt=config.require_object("adoptRoles"),
    ),
    opts=postgres,
)
migrations = Migrations(
    "migration",
    MigrationsArgs(
        migrations=migration_files,
        environment=database.command_environment(),
        allow_data_loss=config.require_bool("allowDataLoss"),
        after=[schema, roles],
    ),
)
grants = Grants(
    "grants",
    GrantsArgs(
        database=database.args.database,
        schema=schema.name,
        owner=admin_role,
        requires=[schema, roles],
        tables_after=migrations.commands,
    ),
    opts=postgres,
)
verification = Verification(
    "verify",
    VerificationArgs(
        environment=database.command_environment(),
        digest=digest({"migrations": migrations.applied, "roles": roles.settings, "grants": grants.settings}),
        after=[migrations.apply, *migrations.commands, grants],
    ),
)

backend_login = database.login_for(backend_role)
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
pulumi.export("schema", {"name": schema.name, "protected": config.require_bool("protectSchema")})
pulumi.export("revertsAllowDataLoss", config.require_bool("allowDataLoss"))
