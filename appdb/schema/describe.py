"""The canonical description of a schema: what ``appdb schema`` prints and the snapshot holds.

A :class:`Description` is an ordered mapping from a stable *identity* to a *definition*::

    schema app                                              owner postgres
    privilege schema app TO app_reader                      USAGE
    default privileges FOR ROLE postgres ON TABLES TO ...   SELECT, INSERT, UPDATE, DELETE
    table app.memberships                                   owner postgres
    rls app.memberships                                     enabled
    column app.memberships.status                           text NOT NULL DEFAULT 'incomplete'::text
    constraint app.memberships.memberships_user_id_key      UNIQUE (user_id)
    index app.memberships.memberships_status_idx            CREATE INDEX ... USING btree (status)
    policy app.memberships.memberships_select_own           PERMISSIVE FOR SELECT TO authenticated USING (...)
    trigger app.memberships.NAME                            CREATE TRIGGER ...
    privilege table app.memberships TO authenticated        SELECT
    privilege column app.memberships.status TO ROLE         SELECT
    function app.NAME(ARGS)                                 owner postgres + CREATE OR REPLACE FUNCTION ...
    type app.NAME                                           owner postgres, ENUM ('a', 'b')
    schema appdb                                            owner postgres
    table appdb.migrations                                  owner postgres
    privilege table appdb.migrations TO ROLE                (only where someone granted one)

Identities keep the catalog's names (quoted with ``quote_ident`` where needed): the
incident turned on a constraint's name. Definitions come from PostgreSQL's own
deparsers, with ``search_path`` set to ``pg_catalog`` so every other name is qualified.
Nothing depends on OIDs or physical order, so two databases built the same way give
byte-identical descriptions. The one catalog query is ``appdb/schema/describe.sql``; it
reads the catalog only, so a login without USAGE on Supabase's ``auth`` can run it.

The text form, one entry per identity line and its definition on the lines after it,
each indented by four spaces (multi-line definitions, such as a function's, keep their
lines; an empty line inside one is written empty)::

    column app.memberships.status
        text NOT NULL DEFAULT 'incomplete'::text

Lines starting with ``#`` are comments. :meth:`Description.to_text` and
:func:`parse` round-trip exactly. The JSON form is ``{"schema": ..., "objects":
{identity: definition, ...}}`` in the same order.

API (no printing, no Pulumi)::

    describe(conn, schema="app", ledger=True) -> Description   # raises SchemaNotFound
    Description.to_text() / .to_json() / .as_dict()
    parse(text, schema, source="...") -> Description    # raises MalformedDescription
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources

import psycopg

from appdb.access import SCHEMA
from appdb.errors import MalformedDescription, SchemaNotFound

INDENT = "    "
# The first word of every identity; a line starting with anything else is malformed.
KINDS = ("schema", "privilege", "default", "table", "view", "materialized", "sequence", "foreign",
         "rls", "column", "constraint", "index", "policy", "trigger", "function", "procedure",
         "aggregate", "type")


@dataclass(frozen=True, eq=True)
class Description:
    """One schema's objects: identity -> definition, in canonical order."""

    schema: str
    entries: Mapping[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def items(self):
        return self.entries.items()

    def to_text(self) -> str:
        """The readable form: identity lines, each followed by its indented definition."""
        lines: list[str] = []
        for identity, definition in self.entries.items():
            lines.append(identity)
            lines.extend(INDENT + line if line else "" for line in definition.split("\n"))
        return "\n".join(lines) + ("\n" if lines else "")

    def as_dict(self) -> dict[str, object]:
        return {"schema": self.schema, "objects": dict(self.entries)}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, ensure_ascii=False) + "\n"

    def without(self, identities: set[str]) -> Description:
        """The same description less some identities (the ignore list's matches)."""
        return Description(self.schema, {k: v for k, v in self.entries.items() if k not in identities})


def _query() -> str:
    return resources.files("appdb.schema").joinpath("describe.sql").read_text(encoding="utf-8")


def schema_exists(conn: psycopg.Connection, schema: str) -> bool:
    return conn.execute("SELECT FROM pg_catalog.pg_namespace WHERE nspname = %s", (schema,)).fetchone() is not None


def require_schema(conn: psycopg.Connection, schema: str, where: str = "this database") -> None:
    """A usage error, before any work, when the schema is not there: most often the wrong database."""
    if not schema_exists(conn, schema):
        raise SchemaNotFound(f"schema {schema!r} does not exist in {where}: is it the right database?")


def describe(conn: psycopg.Connection, schema: str = SCHEMA, ledger: bool = True) -> Description:
    """The description of ``schema`` on the live database behind ``conn``.

    With ``ledger``, it ends with who owns and who may use the ledger's schema ``appdb``
    and the objects in it (never the ledger's rows): a grant there lets a role rewrite the
    reverts the deploy login runs, so the snapshot and ``diff`` cover it. ``baseline``
    leaves it out: the ledger is appdb's, not something a migration makes.

    One statement, so one consistent view of the catalog. ``search_path`` is set to
    ``pg_catalog`` for the statement's transaction only and restored afterwards.
    """
    require_schema(conn, schema)
    with conn.transaction():
        previous = conn.execute("SELECT pg_catalog.current_setting('search_path')").fetchone()[0]
        conn.execute("SELECT pg_catalog.set_config('search_path', 'pg_catalog', true)")
        try:
            rows = conn.execute(_query(), {"schema": schema, "ledger": ledger}).fetchall()
        finally:
            if not conn.broken and conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS:
                conn.execute("SELECT pg_catalog.set_config('search_path', %s, true)", (previous,))
    entries: dict[str, str] = {}
    for identity, definition in rows:
        entries[_one_line(identity)] = _tidy(definition)
    return Description(schema, entries)


def _one_line(identity: str) -> str:
    """Identities are one line; a newline inside a quoted name is written as \\n."""
    return identity.replace("\r", "\\r").replace("\n", "\\n")


def _tidy(definition: str | None) -> str:
    """Definitions carry no trailing spaces per line end and no leading or trailing empty lines."""
    text = (definition or "").replace("\r\n", "\n").strip("\n")
    return text if text.strip() else "(empty)"


def parse(text: str, schema: str, source: str = "description") -> Description:
    """A description read back from :meth:`Description.to_text`'s form.

    Errors name ``source`` and the line: a definition line with no identity before it,
    an identity with no definition, an unknown kind of identity, an identity twice.
    """
    entries: dict[str, str] = {}
    identity: str | None = None
    identity_line = 0
    body: list[str] = []
    blanks = 0

    def close() -> None:
        if identity is None:
            return
        if not body:
            raise MalformedDescription(f"{source}:{identity_line}: {identity!r} has no definition line after it")
        entries[identity] = "\n".join(body)

    for number, line in enumerate(text.replace("\r\n", "\n").split("\n"), start=1):
        if not line.strip():
            blanks += 1
            continue
        if line.startswith(INDENT):
            if identity is None:
                raise MalformedDescription(f"{source}:{number}: an indented definition line with no identity before it")
            if body:
                body.extend([""] * blanks)
            body.append(line[len(INDENT):])
            blanks = 0
            continue
        blanks = 0
        if line.startswith("#"):
            continue
        if line[0].isspace() or line.split(" ", 1)[0] not in KINDS:
            raise MalformedDescription(
                f"{source}:{number}: {line[:60]!r} is neither an identity (starting with one of "
                f"{', '.join(KINDS[:4])}, ...) nor a definition indented by four spaces"
            )
        close()
        if line in entries:
            raise MalformedDescription(f"{source}:{number}: {line!r} appears twice")
        identity, identity_line, body = line, number, []
    close()
    return Description(schema, entries)
