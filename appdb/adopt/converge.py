"""pg_dump's schema-only output rewritten into a migration that converges, and its revert.

A dump restores into an empty database; a migration must also run where some or all of
its objects already exist (the database it was pulled from, or one the shipped
migrations built), change nothing there, and create what is missing. pg_dump prints a
header before each object (``-- Name: ...; Type: INDEX; Schema: app; Owner: -``), so
every statement is rewritten by the kind of object it makes:

=====================  ======================================================================
kind                   rewritten as
=====================  ======================================================================
FUNCTION, PROCEDURE,   ``CREATE OR REPLACE``: the pulled definition wins
VIEW, RULE, TRIGGER
TABLE, SEQUENCE,       ``CREATE ... IF NOT EXISTS``: an existing one is kept as it is
MATERIALIZED VIEW
TYPE, DOMAIN,          a ``DO`` block that looks the object up by name first
CONSTRAINT, identity
FK / CHECK CONSTRAINT  the same, added ``NOT VALID`` and validated in the last step, so no
                       scan runs under the lock that adds it
INDEX                  ``CREATE INDEX CONCURRENTLY IF NOT EXISTS``, one step each, after a
                       step that drops an invalid leftover of an interrupted build
POLICY                 ``DROP POLICY IF EXISTS`` then ``CREATE POLICY``: the pulled one wins
DEFAULT, OWNED BY      kept, where the column is no identity (an earlier migration's may be)
ROW SECURITY, COMMENT  kept: they are idempotent already
SCHEMA                 left out: the Pulumi program owns the schema, its roles and grants
=====================  ======================================================================

A unique key, index or check that an earlier migration already makes under another name
(``earlier``) is left out, with a comment: two unique keys on one column are the
incident's second half, and the earlier migration's name is the one every database has.

Anything else (partitions attached, operators, text search, ...) is refused by name,
rather than written in a form that would fail or fight on the next database.

The revert drops what the migration brought, newest first, and nothing that an earlier
migration creates (``earlier``: the description of a database built from them): a table
they make keeps its rows, and loses only the pulled indexes, constraints, triggers and
policies. Dropping a table that holds rows is refused unless data loss is allowed, as
for every revert in this project.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from appdb.errors import Refused
from appdb.migrate import statements

IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
QNAME = rf"{IDENT}\.{IDENT}"
_HEADER = re.compile(
    r"^--\n-- (?:Data for )?Name: (?P<name>[^\n]*?); Type: (?P<type>[^;\n]+); "
    r"Schema: (?P<schema>[^;\n]*); Owner: [^\n]*\n--\n",
    re.MULTILINE,
)
_NOISE = re.compile(
    r"^(?:SET [a-z_]+ = .*;|SELECT pg_catalog\.set_config\('search_path', '', false\);|\\(?:un)?restrict \S+)\n?",
    re.MULTILINE,
)
_TRAILER = re.compile(r"\n--\n-- PostgreSQL database dump complete\n--\n.*", re.DOTALL)
_DO_TAG = "$pull$"
# Rules about how a new table should be designed: the pulled tables already exist, and
# changing a column's type is a migration of its own. Squawk's safety rules still apply.
DESIGN_RULES = ("prefer-bigint-over-int", "prefer-bigint-over-smallint", "prefer-identity",
                "prefer-text-field", "prefer-timestamptz", "ban-char-field")
# Kept as pg_dump prints them (each is idempotent), or left out.
_KEEP = {"ROW SECURITY"}
_SKIP = {"SCHEMA"}


@dataclass(frozen=True)
class DumpEntry:
    """One object of the dump: pg_dump's header fields and the SQL it printed for it."""

    name: str
    type: str
    schema: str
    sql: str


@dataclass
class Pulled:
    """The rewritten migration, in steps, and what its revert must drop."""

    objects: list[str] = field(default_factory=list)      # first step: everything pre-data
    indexes: list[tuple[str, str]] = field(default_factory=list)   # (identity, CONCURRENTLY statement)
    links: list[str] = field(default_factory=list)        # constraints' FKs, triggers, policies, comments
    validate: list[str] = field(default_factory=list)
    drops: list[tuple[str, str]] = field(default_factory=list)     # (identity, drop statement), dump order
    tables: list[str] = field(default_factory=list)
    invalid_index_names: list[tuple[str, str]] = field(default_factory=list)  # (table, index name)
    earlier_keys: dict[tuple[str, str], str] = field(default_factory=dict)  # (table, key) -> identity
    left_out: list[str] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not (self.objects or self.indexes or self.links)


def entries(dump: str) -> list[DumpEntry]:
    """The dump's objects in pg_dump's order (which is a valid creation order)."""
    dump = _TRAILER.sub("\n", dump)
    headers = list(_HEADER.finditer(dump))
    found = []
    for index, header in enumerate(headers):
        end = headers[index + 1].start() if index + 1 < len(headers) else len(dump)
        body = _NOISE.sub("", dump[header.end():end]).strip()
        found.append(DumpEntry(header["name"], header["type"], header["schema"], body))
    return found


def rewrite(dump: str, schema: str, earlier: Mapping[str, str] | None = None) -> Pulled:
    """The converging migration for every object of ``schema`` in the dump.

    ``earlier`` is the description (identity -> definition) of a database built from the
    migrations before this one; empty for a first migration.
    """
    pulled = Pulled(earlier_keys=_keys(earlier or {}))
    unsupported = []
    for entry in entries(dump):
        if entry.type in _SKIP or _is_schema_comment(entry, schema) or not entry.sql:
            continue
        handler = _HANDLERS.get(entry.type)
        if handler is None:
            unsupported.append(f"{entry.type} {entry.name}")
            continue
        handler(entry, pulled)
    if unsupported:
        raise Refused(
            f"pull cannot yet rewrite these objects into a converging migration: {', '.join(unsupported)}; "
            "nothing was written: write a migration for them by hand (appdb new NAME)"
        )
    return pulled


# --- the rewrites, one per kind of object ---------------------------------------------


_INDEX_DEF = re.compile(rf"^CREATE (UNIQUE )?INDEX (?:CONCURRENTLY )?(?:IF NOT EXISTS )?{IDENT} ON (?:ONLY )?"
                        rf"({QNAME}) USING (\w+) (\(.*)$", re.DOTALL)
_KEY_DEF = re.compile(r"^(?:UNIQUE|PRIMARY KEY) (\(.*\))$")


def _keys(description: Mapping[str, str]) -> dict[tuple[str, str], str]:
    """Each unique key, index and check of a description, by what it enforces rather than its name."""
    keys = {}
    for identity, definition in description.items():
        kind, _, name = identity.partition(" ")
        if kind not in ("index", "constraint"):
            continue
        table = name.rsplit(".", 1)[0]
        key = _key(table, definition)
        if key:
            keys.setdefault(key, identity)
    return keys


def _key(table: str, definition: str) -> tuple[str, str] | None:
    """What an index or constraint enforces on ``table``, with its name left out."""
    definition = definition.rstrip(";")
    index = _INDEX_DEF.match(definition)
    if index:
        unique, method, rest = index[1], index[3], index[4]
        return (index[2], f"{'unique ' if unique else ''}{method} {rest}")
    key = _KEY_DEF.match(definition)
    if key:
        return (table, f"unique btree {key[1]}")
    if definition.startswith("CHECK "):
        return (table, definition.removesuffix(" NOT VALID"))
    return None


def _made_earlier(pulled: Pulled, table: str, definition: str, what: str) -> bool:
    """Leave out what an earlier migration makes under another name, saying so in the file."""
    key = _key(table, definition)
    identity = pulled.earlier_keys.get(key) if key else None
    if identity is None or identity.partition(" ")[2] == what.partition(" ")[2]:  # the same object
        return False
    pulled.left_out.append(f"{what}: an earlier migration makes the same ({identity})")
    return True


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _guarded(condition: str, statement: str) -> str:
    """``statement`` run only where ``condition`` holds, checked in the same transaction."""
    if _DO_TAG in statement:
        raise Refused(f"a pulled statement contains {_DO_TAG}, which pull uses to quote: rename that object")
    # Not indented: a line break inside a string or a quoted name is part of it.
    body = statement.rstrip().rstrip(";")
    return f"DO {_DO_TAG}\nBEGIN\n    IF {condition} THEN\n{body};\n    END IF;\nEND\n{_DO_TAG};"


def _sub_first(pattern: str, replacement: str, text: str, entry: DumpEntry) -> str:
    new, count = re.subn(pattern, replacement, text, count=1)
    if not count:
        raise Refused(f"pg_dump printed {entry.type} {entry.name} in a form pull does not know; "
                      "nothing was written (is pg_dump much newer than appdb?)")
    return new


def _table(entry: DumpEntry, pulled: Pulled) -> None:
    sql = _sub_first(r"^CREATE ((?:UNLOGGED )?)TABLE ", r"CREATE \1TABLE IF NOT EXISTS ", entry.sql, entry)
    name = re.match(rf"CREATE (?:UNLOGGED )?TABLE IF NOT EXISTS ({QNAME})", sql)[1]
    ignore = f"-- squawk-ignore {', '.join(DESIGN_RULES)}\n"
    pulled.objects.append(ignore + sql)
    pulled.tables.append(name)
    pulled.drops.append((f"table {name}", f"DROP TABLE IF EXISTS {name};"))


def _replaceable(kind: str):
    """VIEW, RULE, TRIGGER: CREATE OR REPLACE, so the pulled definition wins (routines: _routine)."""

    def handle(entry: DumpEntry, pulled: Pulled) -> None:
        sql = _sub_first(rf"^CREATE {kind} ", f"CREATE OR REPLACE {kind} ", entry.sql, entry)
        (pulled.links if kind in ("TRIGGER", "RULE") else pulled.objects).append(sql)
        pulled.drops.append(_drop_replaceable(kind, sql))

    return handle


def _routine(kind: str):
    """FUNCTION, PROCEDURE: CREATE OR REPLACE; dropped by the identity arguments in pg_dump's header."""

    def handle(entry: DumpEntry, pulled: Pulled) -> None:
        sql = _sub_first(rf"^CREATE {kind} ", f"CREATE OR REPLACE {kind} ", entry.sql, entry)
        name = re.match(rf"CREATE OR REPLACE {kind} ({QNAME})\(", sql)[1]
        arguments = entry.name[entry.name.index("("):]
        pulled.objects.append(sql)
        pulled.drops.append((f"{kind.lower()} {name}{arguments}", f"DROP {kind} IF EXISTS {name}{arguments};"))

    return handle


def _drop_replaceable(kind: str, sql: str) -> tuple[str, str]:
    """(identity as appdb/schema/describe.py names it, the statement that drops it)."""
    if kind == "VIEW":
        name = re.match(rf"CREATE OR REPLACE VIEW ({QNAME})", sql)[1]
        return f"view {name}", f"DROP VIEW IF EXISTS {name};"
    on = "TO" if kind == "RULE" else "ON"
    match = re.match(rf"CREATE OR REPLACE {kind} ({IDENT}) .*? {on} ({QNAME})", sql, re.DOTALL)
    name, table = match[1], match[2]
    return f"{kind.lower()} {table}.{name}", f"DROP {kind} IF EXISTS {name} ON {table};"


def _trigger(entry: DumpEntry, pulled: Pulled) -> None:
    if entry.sql.startswith("CREATE CONSTRAINT TRIGGER"):
        match = re.match(rf"CREATE CONSTRAINT TRIGGER ({IDENT}) .*? ON ({QNAME})", entry.sql, re.DOTALL)
        name, table = match[1], match[2]
        statement, rest = _split_first(entry.sql)
        condition = (f"NOT EXISTS (SELECT FROM pg_catalog.pg_trigger WHERE tgrelid = {_literal(table)}::regclass "
                     f"AND pg_catalog.quote_ident(tgname) = {_literal(name)})")
        pulled.links.append("\n".join(filter(None, [_guarded(condition, statement), rest])))
        pulled.drops.append((f"trigger {table}.{name}", f"DROP TRIGGER IF EXISTS {name} ON {table};"))
        return
    _replaceable("TRIGGER")(entry, pulled)


def _split_first(sql: str) -> tuple[str, str]:
    """The first statement of an entry and the rest, split where the lexer ends it (not at a line
    ending in ';': an enum label or a quoted name may hold one)."""
    end = statements.first_statement_end(sql, "pg_dump's output")
    return sql[:end], sql[end:].strip()


def _sequence(entry: DumpEntry, pulled: Pulled) -> None:
    if entry.sql.startswith("CREATE SEQUENCE"):
        sql = _sub_first(r"^CREATE SEQUENCE ", "CREATE SEQUENCE IF NOT EXISTS ", entry.sql, entry)
        name = re.match(rf"CREATE SEQUENCE IF NOT EXISTS ({QNAME})", sql)[1]
        pulled.objects.append(sql)
        pulled.drops.append((f"sequence {name}", f"DROP SEQUENCE IF EXISTS {name};"))
        return
    # An identity column's sequence: ALTER TABLE t ALTER COLUMN c ADD GENERATED ... AS IDENTITY (...)
    match = re.match(rf"ALTER TABLE (?:ONLY )?({QNAME}) ALTER COLUMN ({IDENT}) ADD GENERATED", entry.sql)
    if not match:
        raise Refused(f"pg_dump printed SEQUENCE {entry.name} in a form pull does not know; nothing was written")
    table, column = match[1], match[2]
    condition = (f"(SELECT attidentity FROM pg_catalog.pg_attribute WHERE attrelid = {_literal(table)}::regclass "
                 f"AND pg_catalog.quote_ident(attname) = {_literal(column)} AND NOT attisdropped) = ''")
    pulled.objects.append(_guarded(condition, entry.sql))


def _constraint(entry: DumpEntry, pulled: Pulled) -> None:
    match = re.match(rf"ALTER TABLE (?:ONLY )?({QNAME})\s+ADD CONSTRAINT ({IDENT}) (.*);\s*$", entry.sql, re.DOTALL)
    if not match:
        raise Refused(f"pg_dump printed {entry.type} {entry.name} in a form pull does not know; nothing was written")
    table, name, definition = match[1], match[2], match[3]
    if _made_earlier(pulled, table, definition, f"constraint {table}.{name}"):
        return
    later = entry.type in ("FK CONSTRAINT", "CHECK CONSTRAINT")
    if later and not definition.endswith("NOT VALID"):
        # Added without a scan under the ALTER TABLE lock; validated in the last step.
        definition += " NOT VALID"
        pulled.validate.append(f"ALTER TABLE {table} VALIDATE CONSTRAINT {name};")
    statement = f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition};"
    condition = (f"NOT EXISTS (SELECT FROM pg_catalog.pg_constraint WHERE conrelid = {_literal(table)}::regclass "
                 f"AND pg_catalog.quote_ident(conname) = {_literal(name)})")
    (pulled.links if later else pulled.objects).append(_guarded(condition, statement))
    pulled.drops.append((f"constraint {table}.{name}", f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name};"))


def _index(entry: DumpEntry, pulled: Pulled) -> None:
    match = re.match(rf"CREATE (UNIQUE )?INDEX ({IDENT}) ON (ONLY )?({QNAME}) ", entry.sql)
    if not match:
        raise Refused(f"pg_dump printed INDEX {entry.name} in a form pull does not know; nothing was written")
    name, only, table = match[2], match[3], match[4]
    schema = table.split(".")[0]
    identity = f"index {table}.{name}"
    if _made_earlier(pulled, table, entry.sql, identity):
        return
    if only:
        # The parent of a partitioned table: CONCURRENTLY is not possible there.
        pulled.links.append(_sub_first(r"^CREATE (UNIQUE )?INDEX ", r"CREATE \1INDEX IF NOT EXISTS ", entry.sql, entry))
    else:
        statement = _sub_first(r"^CREATE (UNIQUE )?INDEX ", r"CREATE \1INDEX CONCURRENTLY IF NOT EXISTS ",
                               entry.sql, entry)
        pulled.indexes.append((identity, statement))
        pulled.invalid_index_names.append((table, name))
    pulled.drops.append((identity, f"DROP INDEX CONCURRENTLY IF EXISTS {schema}.{name};"))


def _policy(entry: DumpEntry, pulled: Pulled) -> None:
    match = re.match(rf"CREATE POLICY ({IDENT}) ON ({QNAME})", entry.sql)
    if not match:
        raise Refused(f"pg_dump printed POLICY {entry.name} in a form pull does not know; nothing was written")
    name, table = match[1], match[2]
    pulled.links.append(f"DROP POLICY IF EXISTS {name} ON {table};\n{entry.sql}")
    pulled.drops.append((f"policy {table}.{name}", f"DROP POLICY IF EXISTS {name} ON {table};"))


def _by_name(kind: str, lookup: str):
    """TYPE, DOMAIN: created where no type of that name exists."""

    def handle(entry: DumpEntry, pulled: Pulled) -> None:
        match = re.match(rf"CREATE {kind} ({QNAME})", entry.sql)
        if not match:
            raise Refused(f"pg_dump printed {entry.type} {entry.name} in a form pull does not know; nothing was written")
        statement, rest = _split_first(entry.sql)
        pulled.objects.append("\n".join(filter(None, [_guarded(lookup.format(_literal(match[1])), statement), rest])))
        pulled.drops.append((f"type {match[1]}", f"DROP {kind} IF EXISTS {match[1]};"))

    return handle


def _matview(entry: DumpEntry, pulled: Pulled) -> None:
    sql = _sub_first(r"^CREATE MATERIALIZED VIEW ", "CREATE MATERIALIZED VIEW IF NOT EXISTS ", entry.sql, entry)
    name = re.match(rf"CREATE MATERIALIZED VIEW IF NOT EXISTS ({QNAME})", sql)[1]
    pulled.objects.append(sql)
    pulled.drops.append((f"materialized view {name}", f"DROP MATERIALIZED VIEW IF EXISTS {name};"))


def _column_setting(entry: DumpEntry, pulled: Pulled) -> None:
    """A serial's DEFAULT and OWNED BY: only where that column is no identity or generated column.

    A database built by an earlier migration may have the column as an identity, where
    both statements fail; the existing column is kept as it is, like an existing table.
    """
    if entry.type == "DEFAULT":
        match = re.match(rf"ALTER TABLE (?:ONLY )?({QNAME}) ALTER COLUMN ({IDENT}) SET DEFAULT ", entry.sql)
    else:
        match = re.match(rf"ALTER SEQUENCE {QNAME} OWNED BY ({QNAME})\.({IDENT});", entry.sql)
    if not match:
        raise Refused(f"pg_dump printed {entry.type} {entry.name} in a form pull does not know; nothing was written")
    table, column = match[1], match[2]
    condition = (f"EXISTS (SELECT FROM pg_catalog.pg_attribute WHERE attrelid = {_literal(table)}::regclass "
                 f"AND pg_catalog.quote_ident(attname) = {_literal(column)} AND NOT attisdropped "
                 "AND attidentity = '' AND attgenerated = '')")
    pulled.objects.append(_guarded(condition, entry.sql))


def _kept(entry: DumpEntry, pulled: Pulled) -> None:
    (pulled.links if entry.type == "ROW SECURITY" else pulled.objects).append(entry.sql)


def _comment(entry: DumpEntry, pulled: Pulled) -> None:
    pulled.links.append(entry.sql)


def _extension(entry: DumpEntry, pulled: Pulled) -> None:
    if not entry.sql.startswith("CREATE EXTENSION IF NOT EXISTS"):
        raise Refused(f"pg_dump printed EXTENSION {entry.name} in a form pull does not know; nothing was written")
    pulled.objects.append(entry.sql)


def _is_schema_comment(entry: DumpEntry, schema: str) -> bool:
    return entry.type == "COMMENT" and (entry.name.startswith("SCHEMA ") or entry.name.startswith("EXTENSION "))


_HANDLERS = {
    "TABLE": _table,
    "FUNCTION": _routine("FUNCTION"),
    "PROCEDURE": _routine("PROCEDURE"),
    "VIEW": _replaceable("VIEW"),
    "RULE": _replaceable("RULE"),
    "TRIGGER": _trigger,
    "SEQUENCE": _sequence,
    "CONSTRAINT": _constraint,
    "FK CONSTRAINT": _constraint,
    "CHECK CONSTRAINT": _constraint,
    "INDEX": _index,
    "POLICY": _policy,
    "TYPE": _by_name("TYPE", "pg_catalog.to_regtype({}) IS NULL"),
    "DOMAIN": _by_name("DOMAIN", "pg_catalog.to_regtype({}) IS NULL"),
    "MATERIALIZED VIEW": _matview,
    "COMMENT": _comment,
    "EXTENSION": _extension,
    "DEFAULT": _column_setting,
    "SEQUENCE OWNED BY": _column_setting,
    **{kind: _kept for kind in _KEEP},
}


# --- the files ---------------------------------------------------------------------------


def forward_sql(pulled: Pulled, header: str) -> str:
    """The migration file: its steps in creation order."""
    parts = [header.rstrip()]
    if pulled.left_out:
        parts += ["--", "-- Left out, so that no database gets a second copy under another name:",
                  *(f"--   {line}" for line in pulled.left_out)]
    parts += ["", "-- appdb:step objects", *_spaced(pulled.objects)]
    if pulled.indexes:
        names = ", ".join(_literal(name) for _, name in pulled.invalid_index_names)
        tables = ", ".join(sorted({_literal(table) for table, _ in pulled.invalid_index_names}))
        parts += [
            "-- appdb:step drop_invalid_indexes",
            "-- An interrupted CONCURRENTLY build leaves an INVALID index, which IF NOT EXISTS would",
            "-- keep for ever: drop such a leftover so the next steps build it again.",
            f"DO {_DO_TAG}\nDECLARE\n    leftover text;\nBEGIN\n    FOR leftover IN\n"
            "        SELECT i.indexrelid::regclass::text FROM pg_catalog.pg_index AS i\n"
            "        JOIN pg_catalog.pg_class AS c ON c.oid = i.indexrelid\n"
            f"        WHERE i.indrelid IN (SELECT pg_catalog.to_regclass(t) FROM unnest(ARRAY[{tables}]) AS t)\n"
            f"          AND NOT i.indisvalid AND pg_catalog.quote_ident(c.relname) IN ({names})\n"
            "    LOOP\n        RAISE NOTICE 'dropping the invalid index % left by an interrupted build', leftover;\n"
            "        EXECUTE format('DROP INDEX %s', leftover);\n    END LOOP;\nEND\n" f"{_DO_TAG};",
            "",
        ]
        for number, (_, statement) in enumerate(pulled.indexes, start=1):
            parts += [f"-- appdb:step index_{number} transaction=false",
                      "-- squawk-ignore ban-concurrent-index-creation-in-transaction", statement, ""]
    if pulled.links:
        parts += ["-- appdb:step links", *_spaced(pulled.links)]
    if pulled.validate:
        parts += ["-- appdb:step validate statement_timeout=1h",
                  "-- VALIDATE scans under SHARE UPDATE EXCLUSIVE, which blocks no reader or writer;",
                  "-- on a valid constraint it is a no-op.", *pulled.validate, ""]
    return "\n".join(parts).rstrip() + "\n"


def revert_sql(pulled: Pulled, header: str, migration_id: str, earlier: Iterable[str]) -> str:
    """The revert: drop what the migration brought, never what an earlier migration creates."""
    keep = set(earlier)
    dropped_tables = [t for t in pulled.tables if f"table {t}" not in keep]
    drops, index_drops = [], []
    for identity, statement in reversed(pulled.drops):
        if identity in keep or _on_dropped_table(identity, dropped_tables):
            continue
        (index_drops if identity.startswith("index ") else drops).append(statement)
    drops.sort(key=_drop_order)
    drops = [_deliberate(statement) for statement in drops]
    parts = [header.rstrip(), ""]
    if dropped_tables:
        parts += ["-- appdb:step guard", _guard(dropped_tables, migration_id), ""]
    parts += ["-- appdb:step drop", *drops, ""]
    if not drops:
        parts.insert(-1, "-- Nothing but indexes to drop here: every other object is an earlier migration's.")
    for number, statement in enumerate(index_drops, start=1):
        parts += [f"-- appdb:step drop_index_{number} transaction=false", statement, ""]
    return "\n".join(parts).rstrip() + "\n"


# Constraints (foreign keys first in reverse dump order) before what they use, dependants
# before tables, tables before the sequences they own and the functions their triggers call.
_DROP_ORDER = ("constraint", "policy", "trigger", "rule", "view", "materialized", "table", "sequence",
               "function", "procedure", "type")


def _drop_order(statement: str) -> int:
    words = statement.split("\n")[-1].split()
    kind = words[1].lower() if words[0] == "DROP" else "constraint"
    return _DROP_ORDER.index(kind) if kind in _DROP_ORDER else len(_DROP_ORDER)


# A revert drops on purpose: squawk's warnings for the drops it means are silenced one by one.
_DROP_RULES = {"TABLE": "ban-drop-table", "SEQUENCE": "ban-drop-sequence", "FUNCTION": "ban-drop-function",
               "PROCEDURE": "ban-drop-function"}


def _deliberate(statement: str) -> str:
    words = statement.split()
    rule = _DROP_RULES.get(words[1]) if words[0] == "DROP" else None
    return f"-- squawk-ignore {rule}\n{statement}" if rule else statement


def _on_dropped_table(identity: str, dropped_tables: list[str]) -> bool:
    """A constraint, trigger, policy or index of a table the revert drops goes with it."""
    kind, _, rest = identity.partition(" ")
    if kind not in ("constraint", "trigger", "policy", "rule", "index"):
        return False
    return any(rest.startswith(table + ".") for table in dropped_tables)


def _guard(tables: list[str], migration_id: str) -> str:
    """Refuse, before anything is dropped, to lose rows unless data loss was allowed."""
    names = ", ".join(_literal(t) for t in tables)
    return (
        f"DO {_DO_TAG}\nDECLARE\n    t text;\n    rows_held bigint;\nBEGIN\n"
        "    IF current_setting('appdb.allow_data_loss', true) = 'on' THEN\n        RETURN;\n    END IF;\n"
        f"    FOREACH t IN ARRAY ARRAY[{names}] LOOP\n"
        "        CONTINUE WHEN pg_catalog.to_regclass(t) IS NULL;\n"
        "        EXECUTE format('SELECT count(*) FROM %s', t) INTO rows_held;\n"
        "        IF rows_held > 0 THEN\n"
        f"            RAISE EXCEPTION 'reverting {migration_id} drops % and its % row(s); nothing was changed', "
        "t, rows_held\n"
        "                USING ERRCODE = 'AP001',\n"
        f"                      HINT = 'keep the rows: restore migration {migration_id} in the code; or drop them on "
        "purpose: take a backup, run appdb revert "
        f"{migration_id} --allow-data-loss (docs/rollback.md)';\n"
        "        END IF;\n    END LOOP;\nEND\n" f"{_DO_TAG};"
    )


def _spaced(statements: list[str]) -> list[str]:
    out = []
    for statement in statements:
        out += [statement, ""]
    return out
