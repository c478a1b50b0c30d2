"""The one explicit PostgreSQL provider, and the same connection as libpq variables for the commands.

Every ``postgresql`` resource in the program uses this provider; the command
resources get :meth:`Database.command_environment`, so ``bin/appdb`` connects with
exactly the settings the provider uses. The password is a secret Output in both, or,
when the stack sets none, it is not an input at all: the provider falls back to
``PGPASSWORD`` (pulumi-postgresql's documented default) and the commands inherit it
from the engine's environment, so a CI secret never enters the state.

TLS: ``verify-full`` (or ``verify-ca``) checks who answers, against the root
certificate in ``sslrootcert``, which both the provider (its ``sslrootcert`` input) and
the commands (``PGSSLROOTCERT``) get. ``require`` encrypts without checking; ``allow``
and ``prefer`` fall back to plaintext without a word, so they get a warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_postgresql as postgresql

from appdb.libpq import DEFAULT_CONNECT_TIMEOUT, SSLMODES
from components import validation

VERIFYING = ("verify-ca", "verify-full")
WEAK_SSLMODE_WARNING = (
    "sslmode {mode}: weaker than require, because {mode} falls back to a connection without TLS, silently, "
    "when the server or anyone in between offers none, and then the password and the data cross the "
    "network in plain text; use require, or verify-full with sslRootCert"
)


@dataclass
class DatabaseArgs:
    """Where the database is and how to log in.

    ``username`` is the login; ``role`` is the database role behind it. They differ on
    Supabase's session pooler, whose login is ``postgres.<project-ref>`` for role ``postgres``.
    """

    host: pulumi.Input[str]
    # None: PGPASSWORD from the environment of `pulumi up` (CI), never stored in the state.
    password: pulumi.Input[str] | None
    port: int = 5432
    database: str = "postgres"
    username: str = "postgres"
    role: str = "postgres"
    sslmode: str = "require"
    # A PEM file of the root certificate that signed the server's, relative to the project
    # (the commands run there): required by verify-ca and verify-full.
    sslrootcert: str | None = None
    connect_timeout: int = DEFAULT_CONNECT_TIMEOUT


class Database(pulumi.ComponentResource):
    """The provider for one database, and the connection settings for ``bin/appdb``."""

    provider: postgresql.Provider

    def __init__(self, name: str, args: DatabaseArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("appdb:index:Database", name, None, opts)
        validation.port(args.port, "port")
        validation.identifier(args.role, "role")
        if not args.username:
            raise ValueError("username: the login must not be empty")
        _check_tls(args.sslmode, args.sslrootcert)
        if not 0 < args.connect_timeout <= 60:
            raise ValueError(f"connect_timeout: {args.connect_timeout!r} must be between 1 and 60 seconds")

        self.args = args
        self.password = None if args.password is None else pulumi.Output.secret(args.password)
        self.provider = postgresql.Provider(
            name,
            host=args.host,
            port=args.port,
            database=args.database,
            username=args.username,
            database_username=args.role,
            password=self.password,
            sslmode=args.sslmode,
            sslrootcert=args.sslrootcert,
            connect_timeout=args.connect_timeout,
            # Supabase's `postgres` is not a superuser: the provider must not assume it is.
            superuser=False,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"host": args.host, "port": args.port, "database": args.database})

    def command_environment(self) -> dict[str, pulumi.Input[str]]:
        """libpq variables for the command resources; PGPASSWORD stays a secret Output."""
        environment: dict[str, pulumi.Input[str]] = {
            # An inherited DATABASE_URL would win over the PG* variables, and an inherited
            # PGHOSTADDR over PGHOST: blank them (libpq reads an empty PGHOSTADDR as unset), so
            # the commands always reach the stack's database, never the one in someone's shell.
            "DATABASE_URL": "",
            "PGHOSTADDR": "",
            "PGHOST": self.args.host,
            "PGPORT": str(self.args.port),
            "PGDATABASE": self.args.database,
            "PGUSER": self.args.username,
            "PGSSLMODE": self.args.sslmode,
            "PGCONNECT_TIMEOUT": str(self.args.connect_timeout),
        }
        if self.args.sslrootcert:
            environment["PGSSLROOTCERT"] = self.args.sslrootcert
        if self.password is not None:
            environment["PGPASSWORD"] = self.password
        return environment

    def login_for(self, role: str) -> str:
        """The login for ``role`` through the same endpoint: the pooler's ``.<project-ref>`` suffix carries over."""
        prefix = self.args.role + "."
        suffix = self.args.username[len(self.args.role) :] if self.args.username.startswith(prefix) else ""
        return role + suffix


def _check_tls(sslmode: str, sslrootcert: str | None) -> None:
    """A verifying sslmode needs a root certificate that exists; a falling-back one gets a warning."""
    if sslmode not in SSLMODES:
        raise ValueError(f"sslmode: {sslmode!r} is not a libpq sslmode ({', '.join(SSLMODES)})")
    if sslmode in VERIFYING and not sslrootcert:
        raise ValueError(
            f"sslrootcert: sslmode {sslmode} checks the server's certificate against a root certificate, and "
            "none is given: set sslRootCert to its PEM file (for Supabase, the project's CA from Database "
            "settings, see docs/pulumi.md)"
        )
    if sslrootcert and not Path(sslrootcert).is_file():
        raise ValueError(f"sslrootcert: {sslrootcert} is not a file (a path relative to the project, "
                         "or absolute): set sslRootCert to the root certificate's PEM file")
    if sslrootcert and "-----BEGIN CERTIFICATE-----" not in Path(sslrootcert).read_text(errors="replace"):
        raise ValueError(f"sslrootcert: {sslrootcert} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    if sslmode in ("allow", "prefer"):
        pulumi.log.warn(WEAK_SSLMODE_WARNING.format(mode=sslmode))
