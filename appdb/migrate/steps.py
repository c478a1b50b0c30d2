"""One step of a migration, run under the runner's rules (appdb/migrate/runner.py and, for
``apply --group``, appdb/migrate/group.py call it).

Every step commits in its own transaction with ``lock_timeout`` and
``statement_timeout`` set locally; a lock timeout (SQLSTATE 55P03) rolls the step
back and is retried with backoff, so a writer never queues behind a migration for
much longer than one ``lock_timeout``. A migration's ledger row commits with its last
step ("so we never execute migrations twice", as sqlx puts it).

Nothing is recorded unless it is whole:

- Before each run of a ``transaction=false`` step (the first and every retry), an
  INVALID index that one of its ``CREATE INDEX`` statements names is dropped
  (``DROP INDEX CONCURRENTLY``): a lock timeout or a cancel in the middle of a
  ``CONCURRENTLY`` build leaves one, and the retry's ``IF NOT EXISTS`` would keep it.
- After each transactional step, and before the ledger row is written, the runner
  checks that it is still inside its own transaction with the settings it set
  (``lock_timeout``, ``statement_timeout``...) and still holds the migration lock;
  otherwise the step is rolled back and the run stops.
- The ledger refuses a row while an index the migration builds is INVALID, or its
  revert does not parse (:func:`appdb.migrate.ledger.check_recordable`).

Every step is read as the lexer read it: the session's ``standard_conforming_strings`` is
on before each one is sent, whatever the step before did. And each migration starts from
the session as it began (:func:`fresh_session`): what one sets, or leaves (a temporary
table, a prepared statement), never reaches the next, so one ``apply`` and one migration
at a time build the same schema.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import errors, sql
from psycopg.pq import TransactionStatus

from appdb.errors import Interrupted, LockTimeout, MigrationError, Refused
from appdb.migrate import indexes
from appdb.migrate.files import Step
from appdb.migrate.lock import HELD
from appdb.migrate.options import Options
from appdb.migrate.statements import regclass_text

log = logging.getLogger(__name__)


# Our own migrations raise these SQLSTATEs for a refusal the person must act on.
REFUSAL_SQLSTATES = {"AP001"}
CLIENT_CHECK_INTERVAL = "1s"


# Where a step was when it failed: what can be said of what it did depends on it.
IN_STEP = "step"          # inside its transaction: the server rolls it back
COMMITTING = "commit"     # its COMMIT was sent: it may have committed
AUTOCOMMIT = "autocommit"  # a transaction=false step running: what it did so far may stay
RECORDING = "recording"   # a transaction=false step ran; its ledger row was being written
RECORD_COMMITTING = "record-commit"  # ... and that row's COMMIT was sent

# What is known of a step stopped in each phase (a lost connection, Ctrl-C, a lock never had):
# the one place that says it, so no message claims a rollback that may not have happened.
KNOWN_AFTER = {
    IN_STEP: "the step was rolled back and nothing after it ran: run the command again",
    COMMITTING: ("it stopped as the step committed, so whether the step (and, with a migration's last step, its "
                 "ledger row) committed is unknown, and nothing after it ran: 'appdb status' tells, then run the "
                 "command again"),
    AUTOCOMMIT: ("the step is transaction=false, so what it did before it stopped may stay (a CREATE INDEX "
                 "CONCURRENTLY leaves an INVALID index, which the next run drops and builds again); nothing after "
                 "it ran, and it is not recorded: run the command again"),
    RECORDING: ("the step (transaction=false) ran and what it did stays, but it is not recorded: the next run "
                "runs it again (IF NOT EXISTS makes that safe)"),
    RECORD_COMMITTING: ("the step (transaction=false) had run, and what it did stays; its ledger row was committing, "
                        "so whether it is recorded is unknown: 'appdb status' tells; if it says pending, the next "
                        "run runs the step again"),
}
# The phases after which the migration's ledger row may or may not be there.
UNCERTAIN = (COMMITTING, RECORD_COMMITTING)


def run_step(
    conn: psycopg.Connection,
    step: Step,
    source: str,
    migration_id: str,
    options: Options,
    on_commit: Callable[[psycopg.Connection], None] | None,
) -> None:
    """Run one step, retrying lock timeouts; ``on_commit`` runs in the step's own transaction
    (after a ``transaction=false`` step, in one of its own, retried alone: the step that ran is
    never run again for the ledger's sake)."""
    if step.transactional:
        _retrying(conn, step, source, migration_id, options, lambda phase: _transactional(
            conn, step, migration_id, options, on_commit, phase))
        return
    _retrying(conn, step, source, migration_id, options, lambda phase: _autocommit(
        conn, step, source, migration_id, options, phase))
    if on_commit:
        _retrying(conn, step, source, migration_id, options, lambda phase: _record_after(
            conn, step, migration_id, options, on_commit, phase), first=RECORDING)


def _retrying(conn: psycopg.Connection, step: Step, source: str, migration_id: str, options: Options,
              action: Callable[[list[str]], None], first: str = IN_STEP) -> None:
    """``action`` with its lock timeouts retried; a failure said as of the phase it was in."""
    for attempt in range(options.lock_retries + 1):
        phase = [first]
        try:
            action(phase)
            return
        except (errors.LockNotAvailable, errors.DeadlockDetected) as exc:
            # Either way the server rolled back what was in progress, so it is safe to run again.
            try:
                pause_or_give_up(exc, attempt, options, migration_id, step)
            except LockTimeout as timeout:
                if first != RECORDING:
                    raise
                raise LockTimeout(f"{timeout}; {KNOWN_AFTER[RECORDING]}") from None
        except psycopg.Error as exc:
            raise step_failure(exc, conn, step, source, migration_id, phase[0]) from None
        except KeyboardInterrupt:
            if phase[0] == IN_STEP:
                raise
            raise Interrupted(f"interrupted at {migration_id}, step {step.name}: {KNOWN_AFTER[phase[0]]}",
                              [migration_id] if phase[0] in UNCERTAIN else []) from None


def _transactional(conn: psycopg.Connection, step: Step, migration_id: str, options: Options,
                   on_commit: Callable[[psycopg.Connection], None] | None, phase: list[str]) -> None:
    with conn.transaction():
        expected, found = run_in_transaction(conn, step, options)
        check_still_ours(conn, expected, migration_id, step, found)
        if on_commit:
            on_commit(conn)
        phase[0] = COMMITTING


def _autocommit(conn: psycopg.Connection, step: Step, source: str, migration_id: str, options: Options,
                phase: list[str]) -> None:
    expected = set_timeouts(conn, step, options, local=False)
    try:
        _drop_invalid_leftovers(conn, step, source, migration_id)
        phase[0] = AUTOCOMMIT
        if not step.is_empty:
            conn.execute(step.sql)
    finally:
        if not conn.closed and not conn.broken:
            # The next step's text must be read as the lexer read it: the step may
            # have turned standard_conforming_strings off for the session.
            conn.execute("; ".join([*(f"RESET {name}" for name in expected
                                      if name != "standard_conforming_strings"),
                                    CONFORMING_FOR_THE_SESSION]))


def _record_after(conn: psycopg.Connection, step: Step, migration_id: str, options: Options,
                  on_commit: Callable[[psycopg.Connection], None], phase: list[str]) -> None:
    with conn.transaction():
        expected = set_timeouts(conn, step, options, local=True)
        check_still_ours(conn, expected, migration_id, step)
        on_commit(conn)
        phase[0] = RECORD_COMMITTING


def pause_or_give_up(exc: psycopg.Error, attempt: int, options: Options, migration_id: str, step: Step) -> None:
    """After a lock timeout or deadlock: wait before the next try (backoff with jitter), or, after
    the last, raise :class:`LockTimeout`."""
    reason = "deadlock" if isinstance(exc, errors.DeadlockDetected) else "lock timeout"
    if attempt >= options.lock_retries:
        raise LockTimeout(
            f"{migration_id}, step {step.name}: {reason}: could not get a lock within "
            f"{options.lock_timeout:g} s on any of {options.lock_retries + 1} tries "
            f"({exc.diag.message_primary}); a long transaction holds it: end it, or retry later "
            "with more --lock-retries"
        ) from None
    pause = min(0.2 * 2**attempt, 3.0) * (0.5 + random.random())
    log.warning("%s, step %s: %s, retry %d of %d in %.1f s",
                migration_id, step.name, reason, attempt + 1, options.lock_retries, pause)
    time.sleep(pause)


# The server parses a query's whole text before any of it runs, with the session's value:
# so before every step the session must read strings as the lexer did.
CONFORMING_FOR_THE_SESSION = "SELECT pg_catalog.set_config('standard_conforming_strings', 'on', false)"


def conforming_strings(conn: psycopg.Connection) -> None:
    """The session reads strings as the lexer did, whatever a database or role default says.

    The server parses a step's whole text before the step's own ``set_config`` runs, so the
    session value is what the first step is read with.
    """
    _for_the_session(conn, CONFORMING_FOR_THE_SESSION)


def fresh_session(conn: psycopg.Connection) -> None:
    """The session as it began (its session user, ``RESET ALL``: search_path, role, every
    setting; no temporary table, prepared statement, open cursor or LISTEN left), reading
    strings as the lexer does. Not ``DISCARD ALL``: it would let go of the migration lock.
    (appdb/connection.py never lets psycopg prepare a statement of its own, so none of
    psycopg's goes.)"""
    _for_the_session(conn, FRESH_SESSION)


# CLOSE ALL before DISCARD TEMP: inside a --group transaction, a cursor still open over a temporary
# table would keep it from being dropped.
FRESH_SESSION = ("SET SESSION AUTHORIZATION DEFAULT; RESET ALL; CLOSE ALL; DISCARD TEMP; DEALLOCATE ALL; "
                  f"UNLISTEN *; {CONFORMING_FOR_THE_SESSION}")


def fresh_session_within(conn: psycopg.Connection) -> None:
    """:func:`fresh_session` inside the caller's transaction (``--group``), which it leaves
    open: before a group's ledger rows (between two of its migrations, the step's query does it)."""
    conn.execute(FRESH_SESSION)


def _for_the_session(conn: psycopg.Connection, text: str) -> None:
    """Run ``text`` so that it lasts for the session: committed at once on a connection that is not autocommit."""
    conn.execute(text)
    if conn.info.transaction_status == TransactionStatus.INTRANS:
        conn.commit()


def step_settings(conn: psycopg.Connection, step: Step, options: Options) -> dict[str, str]:
    """What every step runs with: its timeouts, and whether a revert may lose data."""
    settings = {
        # Rounded up, never to 0ms: that would mean no limit at all.
        "lock_timeout": f"{max(1, math.ceil(options.lock_timeout * 1000))}ms",
        "statement_timeout": step.statement_timeout or options.statement_timeout,
        "appdb.allow_data_loss": "on" if options.allow_data_loss else "off",
        # The file was lexed (appdb/migrate/statements.py) as the server reads it with this on;
        # with it off, `'\''` ends a string where the lexer sees none end, and hides a COMMIT.
        "standard_conforming_strings": "on",
        # The text goes to the server as UTF-8 (appdb/connection.py): a step that changed the
        # session's encoding would have the next step's text sent in another.
        "client_encoding": "UTF8",
    }
    if conn.info.server_version >= 140000:
        # If this process dies (SIGKILL, lost network), the server notices within a second
        # and rolls the step back, instead of running it to the end holding its locks.
        settings["client_connection_check_interval"] = CLIENT_CHECK_INTERVAL
    return settings


def run_in_transaction(conn: psycopg.Connection, step: Step,
                       options: Options) -> tuple[dict[str, str], tuple[str, ...]]:
    """Set the settings locally, run the step, read the settings back: one round trip, not three.

    One simple-protocol query, ``SELECT set_config(...);`` + the step + ``SELECT
    current_setting(...)``, inside the transaction the caller opened: the same statements in
    the same order as three queries would be, and the server parses the whole text before it
    runs any of it. Returns the settings as the server set them and as they are after the
    step, for :func:`check_still_ours`. Only for transactional steps: a ``transaction=false``
    step runs alone, as PostgreSQL runs several statements of one query in one transaction.
    (``apply --group`` sends many migrations so in one query: :func:`appdb.migrate.group._run_chunk`.)
    """
    settings = step_settings(conn, step, options)
    names = list(settings)
    prefix, suffix = around_step(conn, tuple(settings.items()))
    prefix += lock_first(conn, step)
    try:
        cursor = conn.execute(prefix + step.sql + suffix)
    except psycopg.Error as exc:
        # Where the step starts in what was sent, for the line.
        exc.appdb_text, exc.appdb_offset = prefix + step.sql + suffix, len(prefix)  # type: ignore[attr-defined]
        raise
    expected = dict(zip(names, cursor.fetchone()))
    # The settings read back are the last result but one: the session's standard_conforming_strings comes last.
    found = latest = None
    while cursor.nextset():
        if cursor.description is not None:
            found, latest = latest, cursor.fetchone()
    return expected, found


_AROUND: dict[tuple[tuple[tuple[str, str], ...], bool, str | None], tuple[str, str]] = {}
# For each table: lock it if it is one (a DROP TABLE of an index or a view gets PostgreSQL's own
# error from the step, not LOCK's). Inside a DO block whose dollar tag no name holds.
_LOCK_FIRST = sql.SQL(
    "IF (SELECT relkind FROM pg_catalog.pg_class WHERE oid = pg_catalog.to_regclass({name})) IN ('r', 'p') THEN "
    "LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE; END IF; ")
# For each schema a DROP SCHEMA ... CASCADE names: every table in it (partitions and all), in
# the order of their oids. A schema that does not exist has none.
# A table the login may not lock (another role's, with no UPDATE, DELETE or TRUNCATE granted) is
# passed over: the schema's owner may still drop it with CASCADE, and a guard could not count its
# rows anyway.
_LOCK_SCHEMA_FIRST = sql.SQL(
    "FOR appdb_table IN SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
    "ON n.oid = c.relnamespace WHERE n.nspname = {schema} AND c.relkind IN ('r', 'p') "
    "AND pg_catalog.has_table_privilege(c.oid, 'UPDATE, DELETE, TRUNCATE') ORDER BY c.oid LOOP "
    "EXECUTE pg_catalog.format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', appdb_table::pg_catalog.regclass); "
    "END LOOP; ")


def lock_first(conn: psycopg.Connection, step: Step) -> str:
    """The text before a transactional step that locks, in ``ACCESS EXCLUSIVE`` mode, each table
    its ``DROP TABLE`` and ``TRUNCATE`` statements name and that exists, and each table in a schema
    its ``DROP SCHEMA ... CASCADE`` statements name ('' for a step without).

    Why: a revert's data-loss guard counts the rows, then drops the table. Without the lock first,
    the count takes no lock that stops a writer, and the drop then waits (within ``lock_timeout``)
    for a writer whose row the count could not see; when that writer commits, the drop goes on and
    takes the row with it, with data loss refused. Locked first, the count sees every committed
    row, and no writer adds one before the drop. The lock is the one the drop takes anyway, only
    taken earlier in the same transaction (the retries of a lock timeout apply to it as to the
    drop). Also for reverts already in a ledger, written before this existed. Names as written:
    an unqualified one is looked up on the session's search_path, before the step runs.
    """
    if not step.emptied_tables and not step.emptied_schemas:
        return ""
    body = "".join(
        _LOCK_FIRST.format(name=sql.Literal(regclass_text(parts)), table=sql.Identifier(*parts)).as_string(conn)
        for parts in step.emptied_tables)
    body += "".join(_LOCK_SCHEMA_FIRST.format(schema=sql.Literal(name)).as_string(conn)
                    for name in step.emptied_schemas)
    tag = "$appdb_lock_first$"
    while tag in body:
        tag = tag[:-1] + "_$"
    return f"DO {tag} DECLARE appdb_table pg_catalog.oid; BEGIN {body}END {tag};\n"


def around_step(conn: psycopg.Connection, settings: tuple[tuple[str, str], ...],
                 lock_checked: bool = True, mark: str | None = None) -> tuple[str, str]:
    """The text before and after a transactional step: set_config calls; then current_setting
    reads and whether the migration lock is still held; then standard_conforming_strings on for
    the session, whatever the step did to it, so that the next step is read as the lexer read it.

    ``lock_checked=False``: the caller checks the migration lock itself, before its commit
    (:func:`apply_group`), and the lock reads as held here. ``mark``: the two rows are named
    ``<mark> set`` and ``<mark> read``, and end with the server's clock (:func:`appdb.migrate.group._run_chunk`).
    Quoted by psycopg (sql.Literal), and schema-qualified (a step may change search_path);
    made once per distinct settings, as every step of a run shares them.
    """
    key = (settings, lock_checked, mark)
    if key not in _AROUND:
        sets = [sql.SQL("pg_catalog.set_config({}, {}, true)").format(sql.Literal(name), sql.Literal(value))
                for name, value in settings]
        reads = [sql.SQL("pg_catalog.current_setting({})").format(sql.Literal(name)) for name, _ in settings]
        reads.append(sql.SQL(HELD if lock_checked else "true"))
        if mark is not None:
            # Seconds as numeric, whose text no setting changes (a timestamp's follows DateStyle).
            clock = sql.SQL("pg_catalog.extract('epoch', pg_catalog.clock_timestamp())")
            sets = [sql.SQL("{} AS {}").format(sets[0], sql.Identifier(f"{mark} set")), *sets[1:], clock]
            reads = [sql.SQL("{} AS {}").format(reads[0], sql.Identifier(f"{mark} read")), *reads[1:], clock]
        prefix = sql.SQL("SELECT {};\n").format(sql.SQL(", ").join(sets)).as_string(conn)
        suffix = sql.SQL("\n;SELECT {};\n{}").format(
            sql.SQL(", ").join(reads), sql.SQL(CONFORMING_FOR_THE_SESSION)).as_string(conn)
        _AROUND[key] = prefix, suffix
    return _AROUND[key]


def set_timeouts(conn: psycopg.Connection, step: Step, options: Options, local: bool) -> dict[str, str]:
    """Set the step's timeouts (transaction-local, or for the session); return them as the server has them."""
    settings = step_settings(conn, step, options)
    row = conn.execute(
        "SELECT " + ", ".join("pg_catalog.set_config(%s, %s, %s)" for _ in settings),
        [value for name, setting in settings.items() for value in (name, setting, local)],
    ).fetchone()
    return dict(zip(settings, row))


def check_still_ours(conn: psycopg.Connection, expected: dict[str, str], migration_id: str, step: Step,
                      found: tuple[str, ...] | None = None) -> None:
    """Still inside the runner's transaction, with its settings in force; else nothing is recorded.

    Files may not hold transaction control (refused at load), but a step could still
    end the transaction or lift the timeouts some other way (a ``SET``, a ``RESET ALL``).
    ``found``: the settings as already read after the step, then whether the lock is held
    (:func:`run_in_transaction`). The migration lock must still be ours: a step that let go
    of it (``DISCARD ALL``, ``pg_advisory_unlock_all()``) may have let another run in.
    """
    if conn.info.transaction_status != TransactionStatus.INTRANS:
        raise MigrationError(
            f"{migration_id}, step {step.name}: the step ended the runner's transaction; nothing was recorded: "
            "remove the transaction control from the file"
        )
    names = list(expected)
    row = found if found is not None else conn.execute(
        "SELECT " + ", ".join("pg_catalog.current_setting(%s)" for _ in names) + f", {HELD}", names).fetchone()
    if row is None or not row[-1]:
        raise MigrationError(
            f"{migration_id}, step {step.name} let go of the migration lock (a DISCARD ALL or an advisory "
            "unlock?), so another run may have started meanwhile; the run stopped and nothing was recorded: "
            "remove that from the file"
        )
    # In a session a step turned to SQL_ASCII, psycopg reads text as bytes.
    row = tuple(v.decode("ascii", "replace") if isinstance(v, bytes) else v for v in row)
    expected = {k: v.decode("ascii", "replace") if isinstance(v, bytes) else v for k, v in expected.items()}
    changed = [f"{name} is {now!r}, not {expected[name]!r}" for name, now in zip(names, row) if now != expected[name]]
    if changed:
        raise MigrationError(
            f"{migration_id}, step {step.name} changed the runner's settings ({'; '.join(changed)}); "
            "it was rolled back and nothing was recorded: remove the SET from the file"
        )


def _drop_invalid_leftovers(conn: psycopg.Connection, step: Step, source: str, migration_id: str) -> None:
    """Drop an INVALID index this step builds, left by an earlier, interrupted run of it.

    ``CREATE INDEX CONCURRENTLY`` commits the index's catalog entry before it builds; a
    lock timeout, a cancel or a lost connection after that leaves the index INVALID,
    and ``IF NOT EXISTS`` would then skip it for ever. Runs in autocommit, as the step.
    """
    for index in step.concurrent_indexes(source):
        invalid = indexes.invalid_index(conn, index.name, index.table)
        if invalid is None:
            continue
        log.warning("%s, step %s: dropping the INVALID index %s.%s an interrupted build left, to build it again",
                    migration_id, step.name, *invalid)
        conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}.{}").format(
            sql.Identifier(invalid[0]), sql.Identifier(invalid[1])))


def step_failure(exc: psycopg.Error, conn: psycopg.Connection, step: Step, source: str,
                 migration_id: str, phase: str = IN_STEP) -> MigrationError:
    """One line that says where it failed and why, and what is known of what the step did: a
    failure inside a transaction rolled it back; one at its COMMIT, or in a ``transaction=false``
    step, may not have (:data:`COMMITTING`, :data:`AUTOCOMMIT`, :data:`RECORDING`)."""
    diag = exc.diag
    message = server_message(exc)
    if conn.broken or isinstance(exc, errors.AdminShutdown):
        return MigrationError(f"{migration_id}, step {step.name}: the connection to the server was lost "
                              f"({message}); {KNOWN_AFTER[phase]}",
                              uncertain=[migration_id] if phase in UNCERTAIN else [])
    if diag.sqlstate in REFUSAL_SQLSTATES:
        hint = f" ({diag.message_hint})" if diag.message_hint else ""
        return Refused(f"{migration_id} refused: {message}{hint}")
    line = step.first_line
    if diag.statement_position:
        # A transactional step was sent after its settings (run_in_transaction, group._run_chunk): from its start.
        sent = getattr(exc, "appdb_text", step.sql)
        offset = _in_characters(conn, sent, int(diag.statement_position) - 1) - getattr(exc, "appdb_offset", 0)
        if offset >= 0:
            line += step.sql[:offset].count("\n")
    hint = f"; hint: {diag.message_hint}" if diag.message_hint else ""
    if not step.transactional and diag.sqlstate == errors.ActiveSqlTransaction.sqlstate:
        # Several statements in one query run as one transaction block, even in autocommit. Said
        # here, not refused when files are read: an applied file, or a ledger's revert, that
        # holds transaction-safe statements so runs today, and must go on running.
        hint += "; a transaction=false step holds one statement: give each of this step's its own step"
    return MigrationError(f"{source}:{line}: {message}{hint} (step {step.name}, SQLSTATE {diag.sqlstate})")


def _in_characters(conn: psycopg.Connection, sent: str, position: int) -> int:
    """A position the server gave in the text it was sent, in Python's characters: a SQL_ASCII
    database counts bytes (every other encoding, characters)."""
    if conn.info.parameter_status("server_encoding") == "SQL_ASCII":
        return len(sent.encode("utf-8")[:position].decode("utf-8", "ignore"))
    return position


def server_message(exc: psycopg.Error) -> str:
    """The server's one-line message, else the first line of psycopg's."""
    return exc.diag.message_primary or (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def shown_path(path: Path) -> str:
    """The path as a person would type it: relative to where they stand, when it can be."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
