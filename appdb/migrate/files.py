"""The migration file model: what a file in ``sql/`` means, parsed once.

A migration is ``sql/NNN_snake_description.sql`` with its revert at
``sql/revert/NNN_snake_description.sql``. The version is the leading digits.

Files hold no transaction control; the runner owns transactions. A file that needs
more than one transaction is split into steps by marker comments::

    -- appdb:step add_fk
    ALTER TABLE ...;
    -- appdb:step validate_fk statement_timeout=30min
    ALTER TABLE ... VALIDATE CONSTRAINT ...;
    -- appdb:step build_index transaction=false
    CREATE INDEX CONCURRENTLY IF NOT EXISTS ...;

SQL before the first marker (or a file with no marker) is one step named ``main``.
Each step commits on its own, so every step must be safe to re-run: a crash between
steps is repaired by the next apply. A ``transaction=false`` step runs in autocommit
and must hold a single statement (PostgreSQL runs a multi-statement query string in
one implicit transaction, which CONCURRENTLY refuses).

Refused when the files are loaded, before anything runs (ConfigError, exit 2, with
the file and line): a top-level transaction control statement (BEGIN, COMMIT,
ROLLBACK, SAVEPOINT, ...; PL/pgSQL's BEGIN/END inside a dollar-quoted body is fine),
an unterminated string, quoted identifier, dollar quote or comment, a file that is not
UTF-8, and a ``statement_timeout`` outside (0, 24h]. A UTF-8 byte-order mark is
stripped before anything else, the checksum included, so an editor that adds one does
not make an applied migration ``changed``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from appdb.errors import ConfigError
from appdb.migrate import statements

# re.ASCII: \d would also take '٠٣١', a version no other tool and no snapshot can read.
FILE_PATTERN = re.compile(r"^(?P<id>\d+)_(?P<name>[a-z0-9][a-z0-9_]*)\.sql$", re.ASCII)
STEP_MARKER = re.compile(r"^--\s*appdb:step\b(?P<rest>.*)$")
REVERT_DIR = "revert"
_OPTION = re.compile(r"^(?P<key>[a-z_]+)=(?P<value>\S+)$")
_DURATION = re.compile(r"^(?P<number>\d+)(?P<unit>[a-z]*)$", re.ASCII)
_UNIT_MS = {"ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000}
MAX_STATEMENT_TIMEOUT_MS = 24 * 3_600_000
BOM = "\ufeff"


@dataclass(frozen=True)
class Step:
    """One transaction's worth of a migration (or one autocommit statement)."""

    name: str
    sql: str
    first_line: int
    transactional: bool = True
    statement_timeout: str | None = None
    # The tables its DROP TABLE and TRUNCATE statements name, which the runner locks before its
    # first statement (statements.emptied_tables): read once, as the file is, not at each run.
    emptied_tables: tuple[tuple[str, ...], ...] = ()
    # The schemas its DROP SCHEMA ... CASCADE statements name, whose tables are locked the same way.
    emptied_schemas: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        """True when the step holds only comments and blank lines: nothing to send."""
        return not strip_comments(self.sql).strip()

    def created_indexes(self, source: str) -> list[statements.IndexTarget]:
        """The named indexes this step's ``CREATE INDEX`` statements build."""
        return statements.created_indexes(statements.split(self.sql, source, self.first_line))

    def needs_its_commit(self, source: str) -> bool:
        """Whether what follows must come after this step's commit (``apply --group`` runs its
        migration alone): an enum's new value, ``SET CONSTRAINTS``, or deferred checks and
        triggers, whose work waits for the commit. Read in the whole text, strings and ``DO``
        bodies too (an ``EXECUTE 'ALTER TYPE ... ADD VALUE ...'`` counts): a migration taken for
        one only commits on its own, as it would without ``--group``. Words split by a comment
        (``ADD /* */ VALUE``) are found by the lexer (:func:`statements.needs_a_commit`)."""
        if _LASTS_UNTIL_COMMIT.search(self.sql):
            return True
        if not _MAY_LAST_UNTIL_COMMIT.search(self.sql):
            return False
        return statements.needs_a_commit(statements.split(self.sql, source, self.first_line))

    def concurrent_indexes(self, source: str) -> list[statements.IndexTarget]:
        """The named indexes this step builds ``CONCURRENTLY``: the only builds an interruption leaves INVALID.

        A step whose text never says ``concurrently`` builds none, and is not lexed again.
        """
        if "concurrently" not in self.sql.lower():
            return []
        return [index for index in self.created_indexes(source) if index.concurrently]


@dataclass(frozen=True)
class Migration:
    """A forward file and its revert, as found on disk."""

    id: str
    name: str
    path: Path
    sql: str
    checksum: str
    steps: tuple[Step, ...]
    revert_path: Path
    revert_sql: str
    # Parsed when the file is read: a malformed revert is found then, not mid-rollback.
    revert_steps: tuple[Step, ...] = ()

    @property
    def filename(self) -> str:
        return self.path.name

    @property
    def sort_key(self) -> int:
        return int(self.id)

    def created_indexes(self) -> list[statements.IndexTarget]:
        """Every named index the migration's steps build."""
        return [index for step in self.steps for index in step.created_indexes(str(self.path))]

    def needs_its_commit(self) -> bool:
        """Whether a later migration must see this one committed (``apply --group`` runs it alone)."""
        return any(step.needs_its_commit(str(self.path)) for step in self.steps)

    def concurrent_indexes(self) -> list[statements.IndexTarget]:
        """Every named index the migration builds ``CONCURRENTLY``: none may be INVALID when it is recorded."""
        return [index for step in self.steps for index in step.concurrent_indexes(str(self.path))]


# See Step.needs_its_commit: the words anywhere in a step's text, and, when its words are apart,
# whether it may hold them (then the lexer looks; `VALUES` is not `value`).
_LASTS_UNTIL_COMMIT = re.compile(r"\badd\s+value\b|\bset\s+constraints\b|\bdeferr", re.IGNORECASE)
_MAY_LAST_UNTIL_COMMIT = re.compile(r"\bvalue\b|\bconstraints\b", re.IGNORECASE)


def normalise(text: str) -> str:
    """Line endings normalised to ``\\n`` and a leading byte-order mark dropped, so a checkout
    on Windows, or an editor that adds a BOM, gives the same checksum."""
    return text.removeprefix(BOM).replace("\r\n", "\n").replace("\r", "\n")


def read_text(path: Path) -> str:
    """A migration or revert file's normalised text; one line naming it when it cannot be read,
    is not UTF-8, or holds a NUL byte (libpq ends a query's text at one: what follows would
    never run, and the migration would still be recorded)."""
    try:
        with open(path, "rb") as file:  # not Path.read_bytes: its overhead shows at a thousand files
            data = file.read()
    except OSError as exc:
        raise ConfigError(f"cannot read {path} ({exc.strerror}): it must be a readable file") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}:{line}: not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}): "
            "save the file as UTF-8"
        ) from None
    nul = data.find(b"\0")
    if nul >= 0:
        line = data[:nul].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: a NUL byte (at offset {nul}), after which PostgreSQL would see "
                          "nothing: remove it")
    return normalise(text)


def checksum(text: str) -> str:
    """sha256 of the forward file's text: what ``changed`` is judged by."""
    return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()


def strip_comments(sql: str) -> str:
    """The SQL without ``--`` line comments, to tell an empty step from a real one."""
    return "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))


def parse_steps(text: str, source: str, *, from_ledger: bool = False) -> tuple[Step, ...]:
    """Split a file's text into steps at ``-- appdb:step`` markers.

    ``from_ledger``: a revert already applied and stored, which runs as it is; what only a new file
    is refused for (a name the runner's lock could miss) is not refused in it."""
    text = normalise(text)
    steps: list[Step] = []
    name, options, start, lines = "main", {}, 1, []

    def close() -> None:
        body = "\n".join(lines)
        step = _make_step(name, body, start, options, source)
        if steps or not step.is_empty or name != "main":
            steps.append(step)

    for number, line in enumerate(text.split("\n"), start=1):
        marker = STEP_MARKER.match(line.strip())
        if marker:
            close()
            name, options = _parse_marker(marker.group("rest"), source, number)
            if any(s.name == name for s in steps):
                raise ConfigError(f"{source}:{number}: step name {name!r} is used twice")
            start, lines = number + 1, []
        else:
            lines.append(line)
    close()
    for index, step in enumerate(steps):
        found = statements.split(step.sql, source, step.first_line)
        statements.refuse_transaction_control(found, source)
        statements.refuse_copy_stdio(found, source)
        if not from_ledger:
            statements.refuse_unqualified_after_search_path(found, source)
            statements.refuse_naming_the_ledger(found, source)
        emptied = statements.emptied_tables(found)
        schemas = statements.emptied_schemas(found)
        if emptied or schemas:
            steps[index] = dataclasses.replace(step, emptied_tables=tuple(emptied), emptied_schemas=tuple(schemas))
    if not steps:
        steps.append(Step(name="main", sql="", first_line=1))
    return tuple(steps)


def _parse_marker(rest: str, source: str, line: int) -> tuple[str, dict[str, str]]:
    words = rest.split()
    if not words or "=" in words[0]:
        raise ConfigError(f"{source}:{line}: a step marker needs a name: '-- appdb:step NAME [option=value ...]'")
    options: dict[str, str] = {}
    for word in words[1:]:
        match = _OPTION.match(word)
        if not match or match.group("key") not in ("transaction", "statement_timeout"):
            raise ConfigError(
                f"{source}:{line}: unknown step option {word!r}; "
                "use transaction=false or statement_timeout=DURATION"
            )
        options[match.group("key")] = match.group("value")
    return words[0], options


def _make_step(name: str, body: str, start: int, options: dict[str, str], source: str) -> Step:
    transaction = options.get("transaction", "true")
    if transaction not in ("true", "false"):
        raise ConfigError(f"{source}: step {name!r}: transaction must be true or false, not {transaction!r}")
    timeout = options.get("statement_timeout")
    if timeout is not None:
        _check_duration(timeout, f"{source}: step {name!r}: statement_timeout")
    return Step(
        name=name,
        sql=body,
        first_line=start,
        transactional=transaction == "true",
        statement_timeout=timeout,
    )


def _check_duration(value: str, what: str) -> None:
    """A statement_timeout the runner may set: a number with a unit, above 0 and at most 24h.

    0 would mean no limit at all, which removes the safety the timeout is for.
    """
    match = _DURATION.match(value)
    if not match or match.group("unit") not in _UNIT_MS:
        raise ConfigError(f"{what} {value!r} is not a duration: a whole number with a unit "
                          "(ms, s, min or h), like 30s or 30min")
    milliseconds = int(match.group("number")) * _UNIT_MS[match.group("unit")]
    if not 0 < milliseconds <= MAX_STATEMENT_TIMEOUT_MS:
        raise ConfigError(f"{what} {value!r} is out of bounds: it must be above 0 (0 means no limit) "
                          "and at most 24h")


def load(path: Path) -> Migration:
    """Read one forward file and its revert."""
    match = FILE_PATTERN.match(path.name)
    if not match:
        raise ConfigError(f"{path}: migration files are named NNN_snake_description.sql")
    revert_path = path.parent / REVERT_DIR / path.name
    text = read_text(path)
    if not os.path.lexists(revert_path):
        raise ConfigError(
            f"{path} has no revert: create {revert_path} (a documented no-op is fine; 'appdb new' makes both)"
        )
    revert_text = read_text(revert_path)
    revert_steps = parse_steps(revert_text, str(revert_path))  # a malformed revert is found now
    return Migration(
        id=match.group("id"),
        name=match.group("name"),
        path=path,
        sql=text,
        checksum=checksum(text),
        steps=parse_steps(text, str(path)),
        revert_path=revert_path,
        revert_sql=revert_text,
        revert_steps=revert_steps,
    )


def discover(sql_dir: Path) -> list[Migration]:
    """Every migration in ``sql_dir``, in version order; duplicate versions are an error."""
    if not sql_dir.is_dir():
        raise ConfigError(f"no migrations directory at {sql_dir}: pass --sql-dir or set APPDB_SQL_DIR")
    # Names sorted as strings, then made paths: sorting a thousand Path objects costs more than reading them.
    names = sorted(entry.name for entry in os.scandir(sql_dir) if entry.name.endswith(".sql"))
    migrations = [load(sql_dir / name) for name in names]
    seen: dict[int, Migration] = {}
    for migration in migrations:
        other = seen.get(migration.sort_key)
        if other is not None:
            raise ConfigError(
                f"two migrations share version {migration.id}: {other.filename} and {migration.filename}; renumber one"
            )
        seen[migration.sort_key] = migration
    return sorted(migrations, key=lambda m: m.sort_key)


def is_version(text: str) -> bool:
    """ASCII digits: what a file's name can hold (str.isdigit also takes '²', which int() refuses)."""
    return text.isascii() and text.isdigit()


def find(migrations: list[Migration], migration_id: str) -> Migration:
    """The migration with this version, or a usage error naming the ones that exist."""
    if not is_version(migration_id):
        raise ConfigError(f"migration id {migration_id!r} is not a number like 027")
    for migration in migrations:
        if migration.sort_key == int(migration_id):
            return migration
    known = ", ".join(m.id for m in migrations) or "none"
    raise ConfigError(f"unknown migration id {migration_id}: the migrations in sql/ are {known}")
