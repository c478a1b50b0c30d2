"""The runner: apply and revert, against the ledger (appdb/migrate/ledger.py), under the migration lock.

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
the session as it began (:func:`_fresh_session`): what one sets, or leaves (a temporary
table, a prepared statement), never reaches the next, so one ``apply`` and one migration
at a time build the same schema.

``apply --group`` runs each run of consecutive pending migrations, with their ledger rows, in
one transaction instead (Flyway's ``group``; Alembic's default; ``psql -1``): all of a group or
none of it, with each migration's settings, checks and fresh session inside, and a lock timeout
anywhere retries the group. Only a migration of one transactional step whose effects need no
commit joins a group (:func:`groups`); any other runs as it would alone; a group holds at most
:data:`GROUP_MAX`. A group's locks are held to its commit: for a new database or a quiet window.

Order: a pending migration older than the newest applied one is refused (Flyway's
``outOfOrder=false``; the rule lives in appdb/migrate/ledger.py, with the state), and only
the migration applied last (by ``applied_at``) may be reverted.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import errors, sql
from psycopg.pq import TransactionStatus

from appdb.errors import ConfigError, LockTimeout, MigrationError, Refused
from appdb.migrate import indexes, ledger
from appdb.migrate.files import (
    FILE_PATTERN,
    REVERT_DIR,
    Migration,
    Step,
    find,
    is_version,
    normalise,
    parse_steps,
    read_text,
)
from appdb.migrate.lock import HELD, migration_lock
from appdb.migrate.options import Options

log = logging.getLogger(__name__)

# Our own migrations raise these SQLSTATEs for a refusal the person must act on.
REFUSAL_SQLSTATES = {"AP001"}
WOULD_APPLY = "would apply"
# What a --group dry run says of a migration that would commit on its own.
ALONE = "alone"
CLIENT_CHECK_INTERVAL = "1s"


@dataclass(frozen=True)
class Outcome:
    """What one apply or revert did, for the CLI's progress line and --json."""

    id: str
    name: str
    action: str
    seconds: float = 0.0
    steps: tuple[str, ...] = field(default_factory=tuple)
    # A dry run with --group: the transaction it would commit in, as "031-130", or "alone", and why.
    group: str | None = None
    alone_because: str | None = None

    def as_dict(self) -> dict[str, object]:
        found: dict[str, object] = {"id": self.id, "name": self.name, "action": self.action,
                                    "seconds": round(self.seconds, 3), "steps": list(self.steps)}
        if self.group is not None:
            found["group"] = self.group
        if self.alone_because is not None:
            found["alone_because"] = self.alone_because
        return found

    def line(self) -> str:
        """``027 memberships: applied in 0.12 s``, or what a dry run would do."""
        if self.action == WOULD_APPLY:
            within = "" if self.group is None else f" [group {self.group}]"
            if self.group == ALONE:
                within = f" [alone: {self.alone_because}]" if self.alone_because else " [alone]"
            return f"{self.id} {self.name}: {self.action} (steps: {', '.join(self.steps)}){within}"
        return f"{self.id} {self.name}: {self.action} in {self.seconds:.2f} s"


# Called with each migration's outcome as soon as it is applied, so a person sees progress.
Progress = Callable[[Outcome], None]


def apply(
    conn: psycopg.Connection,
    migrations: list[Migration],
    options: Options,
    only: str | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
    group: bool = False,
) -> list[Outcome]:
    """Apply what is pending, in order (with ``only``, just that one); return what was done.

    ``group``: each run of consecutive migrations that the files allow in one transaction
    commits as one (:func:`groups`, :func:`_apply_group`); ``progress`` hears of a group's
    migrations once it has committed.
    """
    target = find(migrations, only) if only is not None else None
    if dry_run:
        return _plan(_pending(conn, migrations, target), group)
    outcomes: list[Outcome] = []
    with migration_lock(conn, options.wait):
        _fresh_session(conn)
        # Looked up once: under the lock only this run writes it, and its first row creates it.
        ledger_exists = ledger.exists(conn)
        pending = _pending(conn, migrations, target)
        for batch in groups(pending) if group else [[migration] for migration in pending]:
            if group and _groupable(batch[0]):
                done = _apply_group(conn, batch, options, ledger_exists)
            else:
                done = [_apply_one(conn, batch[0], options, ledger_exists)]
            ledger_exists = True
            # What a migration set for its session (a SET search_path in a transaction=false
            # step) must not reach the next one: else one run and several (apply --only, one
            # by one) would build different schemas from the same files.
            _fresh_session(conn)
            for outcome in done:
                outcomes.append(outcome)
                if progress:
                    progress(outcome)
    return outcomes


def _plan(pending: list[Migration], group: bool) -> list[Outcome]:
    """What a dry run says: each pending migration and its steps; with ``group``, the
    transaction it would commit in (:func:`groups`), or that it would run alone."""
    planned: list[Outcome] = []
    for batch in groups(pending) if group else [[migration] for migration in pending]:
        name = because = None
        if group:
            name = f"{batch[0].id}-{batch[-1].id}" if len(batch) > 1 else ALONE
            because = _why_alone(batch[0]) if len(batch) == 1 else None
        planned += [Outcome(m.id, m.name, WOULD_APPLY, steps=tuple(s.name for s in m.steps), group=name,
                            alone_because=because) for m in batch]
    return planned


def _why_alone(migration: Migration) -> str | None:
    """Why ``apply --group`` runs a migration on its own, the one home of :func:`_groupable`'s
    rule; None for a migration that may share a transaction."""
    if not all(step.transactional for step in migration.steps):
        return "a transaction=false step"
    if len(migration.steps) != 1:
        return f"{len(migration.steps)} steps"
    if migration.needs_its_commit():
        return "its text says ADD VALUE, SET CONSTRAINTS or DEFERR... (a comment counts)"
    return None


# The most migrations one --group transaction holds. Every object a migration makes or alters is a
# lock held to the commit, from one table the whole server shares: max_locks_per_transaction (64)
# times max_connections slots, a few thousand on a small Supabase instance. A group that outgrew it
# would fail with "out of shared memory"; a commit every hundred migrations costs a few milliseconds.
GROUP_MAX = 100


def groups(pending: list[Migration]) -> list[list[Migration]]:
    """``apply --group``'s transactions: the pending migrations in order, at most
    :data:`GROUP_MAX` a group. A migration that could not share a transaction as it is written
    (:func:`_groupable`) is a group of its own, and runs as it would without ``--group``."""
    batches: list[list[Migration]] = []
    joinable = False  # whether the last batch is a group with room
    for migration in pending:
        groupable = _groupable(migration)
        if groupable and joinable:
            batches[-1].append(migration)
        else:
            batches.append([migration])
        joinable = groupable and len(batches[-1]) < GROUP_MAX
    return batches


def _groupable(migration: Migration) -> bool:
    """One transactional step whose effects need no commit to be seen: a ``transaction=false``
    step cannot run in a transaction; steps are how a file asks for commits between its parts;
    and an enum's new value, ``SET CONSTRAINTS`` or deferred work would reach, or wait for, the
    migrations after it (:meth:`Migration.needs_its_commit`)."""
    return _why_alone(migration) is None


def _pending(conn: psycopg.Connection, migrations: list[Migration], target: Migration | None) -> list[Migration]:
    """What to apply, after refusing what must not be applied over."""
    current = ledger.status(conn, migrations)
    for state in current:
        if state.state == ledger.CHANGED:
            raise Refused(
                f"migration {state.id} ({state.name}) was edited after it was applied (its checksum differs "
                "from the ledger): restore the applied text and put the change in a new migration (appdb new NAME)"
            )
        if state.state == ledger.REMOVED:
            log.warning("migration %s (%s) is applied but its file is gone: 'appdb revert %s' undoes it",
                        state.id, state.name, state.id)
    pending_ids = set(current.ids(ledger.PENDING))
    pending = [m for m in migrations if m.id in pending_ids]
    if target is not None and target not in pending:
        return []
    ledger.refuse_out_of_order(pending if target is None else [target], current)
    if target is None:
        return pending
    ledger.refuse_earlier_pending(migrations, target, current, f"cannot apply {target.id} alone",
                                  "apply them first (appdb apply)", they_are="pending")
    return [target]


def _apply_one(conn: psycopg.Connection, migration: Migration, options: Options, ledger_exists: bool) -> Outcome:
    started = time.monotonic()
    label = _label(migration.path)

    def record(c: psycopg.Connection) -> None:
        ledger.record(c, migration, int((time.monotonic() - started) * 1000), ledger_exists=ledger_exists)

    for index, step in enumerate(migration.steps):
        last = index == len(migration.steps) - 1
        log.info("%s: step %s", migration.id, step.name)
        _run_step(conn, step, f"{label}", migration.id, options, record if last else None)
    return Outcome(migration.id, migration.name, "applied", time.monotonic() - started,
                   tuple(s.name for s in migration.steps))


def _apply_group(conn: psycopg.Connection, batch: list[Migration], options: Options,
                 ledger_exists: bool) -> list[Outcome]:
    """Migrations and their ledger rows in one transaction: all of them, or none.

    Why: a history brought under code onto a new database is otherwise a thousand small
    transactions, and each commit costs the server more than its DDL (issue 20). Each
    migration still runs as it would alone: its step with its settings and checks, from a fresh
    session (:func:`_apply_together`). A lock timeout or deadlock anywhere rolls back the group
    and retries it from its first, with a step's backoff.
    """
    which = batch[0].id if len(batch) == 1 else f"{batch[0].id} to {batch[-1].id}"
    not_applied = f"none of {which} (one transaction, --group) was applied"
    per_query = QUERY_MAX_CHARS
    attempt = 0
    while True:
        at: list[tuple[Migration, Step]] = []  # where it is, for the error
        try:
            with conn.transaction():
                outcomes = _apply_together(conn, batch, options, at, per_query)
                # Once, not after every step: reading pg_locks costs as many locks as the
                # transaction holds (thousands, by the end of a long history). Before the ledger
                # rows: a run let in meanwhile may have recorded the same migrations; this one
                # rolls back, and what the other committed stays.
                if not conn.execute(f"SELECT {HELD}").fetchone()[0]:
                    raise MigrationError(
                        f"a migration of {which} let go of the migration lock (a DISCARD ALL or an advisory "
                        f"unlock?), so another run may have started meanwhile; {not_applied}: remove that "
                        "from the file"
                    )
                _record_group(conn, batch, outcomes, options, ledger_exists)
                at.clear()  # what fails from here fails the commit, not a step
            return outcomes
        except _Unattributed:
            # Rolled back; sent again a migration a query, which tells which one failed. Not a retry.
            per_query = 0
        except (errors.LockNotAvailable, errors.DeadlockDetected) as exc:
            migration, step = at[-1] if at else (batch[-1], batch[-1].steps[-1])
            try:
                _pause_or_give_up(exc, attempt, options, migration.id, step)
            except LockTimeout as timeout:
                raise LockTimeout(f"{timeout}; {not_applied}") from None
            attempt += 1
        except psycopg.Error as exc:
            if not at:
                raise _commit_failure(exc, conn, which) from None
            migration, step = at[-1]
            failure = _failure(exc, conn, step, _label(migration.path), migration.id)
            raise type(failure)(f"{failure}; {not_applied}") from None
        # As a commit would between two runs: a PREPARE or LISTEN survives the rollback.
        _fresh_session(conn)


def _commit_failure(exc: psycopg.Error, conn: psycopg.Connection, which: str) -> MigrationError:
    """A group's COMMIT failed: a deferred check refused it (nothing applied), or the connection
    went before the answer came (nobody here can know which way it went)."""
    if conn.broken or exc.diag.sqlstate is None:
        return MigrationError(
            f"the connection to the server was lost during the commit of {which} ({_message(exc)}), so whether "
            "they were applied is unknown: 'appdb status' tells, and apply again finishes the job"
        )
    return MigrationError(
        f"the transaction of {which} failed at its commit: {_message(exc)} (SQLSTATE {exc.diag.sqlstate}), a "
        "deferred constraint or trigger of one of them; none of them was applied"
    )


# How much SQL one query of a group carries, in characters: past it, the next migration starts a
# query of its own. The server parses a query whole before it runs any of it, so a group of large
# data migrations sent at once would be in its memory all at once (and a query of 1 GB is refused).
QUERY_MAX_CHARS = 1_000_000


def _apply_together(conn: psycopg.Connection, batch: list[Migration], options: Options,
                    at: list[tuple[Migration, Step]], per_query: int = QUERY_MAX_CHARS) -> list[Outcome]:
    """A group's migrations inside the caller's transaction, as few queries as ``per_query``
    characters of their SQL allow (0: one a migration); ``at`` is given where one failed. Their
    ledger rows come with their group's (:func:`_record_group`).

    Why one query for many: a round trip and psycopg's work on each query were a fifth of
    ``apply --group``'s time over ``psql -1`` at 1,000 migrations (issue 20). Each migration still
    runs as it would alone: after a fresh session (but the group's first, which the caller made
    fresh), between its ``set_config`` calls and the reads of its settings
    (:func:`_check_still_ours`). The server reads the whole text first, with the session as the
    query found it (standard_conforming_strings on, UTF-8): what a migration does to the session
    cannot change how the next one's text is read.
    """
    outcomes: list[Outcome] = []
    for chunk in _chunks(batch, per_query):
        outcomes += _run_chunk(conn, chunk, options, at, fresh=chunk[0] is not batch[0])
    return outcomes


def _chunks(batch: list[Migration], per_query: int) -> list[list[Migration]]:
    """The batch cut into queries of at most ``per_query`` characters of SQL (a larger migration alone)."""
    chunks: list[list[Migration]] = []
    size = 0
    for migration in batch:
        length = len(migration.steps[0].sql)
        if chunks and per_query and size + length <= per_query:
            chunks[-1].append(migration)
            size += length
        else:
            chunks.append([migration])
            size = length
    return chunks


class _Unattributed(Exception):
    """A group's query failed before any of its steps ran (or psycopg kept none of its results),
    so nothing tells which migration is at fault: the group is sent again one a query."""


def _run_chunk(conn: psycopg.Connection, chunk: list[Migration], options: Options,
               at: list[tuple[Migration, Step]], fresh: bool) -> list[Outcome]:
    """One query: for each migration, a fresh session (but the first's, unless ``fresh``), its
    settings set in a row named ``<mark> set``, its step, and its settings read back in a row
    named ``<mark> read``, each with the server's clock for its time."""
    parts: list[str] = []
    starts: list[int] = []  # where each step begins in the text, for the line of an error
    names: list[list[str]] = []  # each migration's settings, in the order of its rows
    length = 0
    for index, migration in enumerate(chunk):
        step = migration.steps[0]
        log.info("%s: step %s", migration.id, step.name)
        settings = _settings(conn, step, options)
        names.append(list(settings))
        prefix, suffix = _around_step(conn, tuple(settings.items()), False, _MARK)
        if index or fresh:
            prefix = f"{_FRESH_SESSION};\n{prefix}"
        starts.append(length + len(prefix))
        parts += [prefix, step.sql, suffix, ";\n"]
        length += len(prefix) + len(step.sql) + len(suffix) + 2
    text = "".join(parts)
    cursor = _KeepsResults(conn)
    try:
        cursor.execute(text)
        rows = _marked_rows(cursor)
    except psycopg.Error as exc:
        index = _which_failed(exc, cursor.received, len(chunk))
        at.append((chunk[index], chunk[index].steps[0]))
        exc.appdb_text, exc.appdb_offset = text, starts[index]  # type: ignore[attr-defined]  # for the line
        raise
    if [kind for kind, _ in rows] != [_SET, _READ] * len(chunk):
        raise MigrationError(
            f"a step of {chunk[0].id}" + (f" to {chunk[-1].id}" if len(chunk) > 1 else "")
            + f" returned a result named as appdb's own checks are ({_MARK!r}...); nothing was recorded: "
            "rename that column"
        )
    outcomes: list[Outcome] = []
    for migration, settings, (_, set_row), (_, read_row) in zip(chunk, names, rows[0::2], rows[1::2]):
        step = migration.steps[0]
        at.append((migration, step))
        _check_still_ours(conn, dict(zip(settings, set_row[:-1])), migration.id, step, read_row[:-1])
        seconds = max(float(read_row[-1] - set_row[-1]), 0.0)
        outcomes.append(Outcome(migration.id, migration.name, "applied", seconds, (step.name,)))
    return outcomes


# The names of a group query's own rows: random for each process, so that no step's text names one.
_MARK = f"appdb {os.urandom(6).hex()}"
_SET = f"{_MARK} set".encode()
_READ = f"{_MARK} read".encode()


class _KeepsResults(psycopg.Cursor):  # type: ignore[type-arg]
    """A cursor that keeps the results its query returned before an error. psycopg raises at the
    first error and drops those before it, which tell how far a group's query came (the rows
    named ``<mark> set`` and ``<mark> read``). Through psycopg's own check of the results
    (pinned in requirements.lock); should it change, ``received`` stays None and the group is
    sent again a migration a query (:class:`_Unattributed`)."""

    received: list[Any] | None = None

    def _check_results(self, results: list[Any]) -> None:
        self.received = results
        super()._check_results(results)


def _which_failed(exc: psycopg.Error, received: list[Any] | None, count: int) -> int:
    """The index, in its query of ``count`` migrations, of the one that failed: by the query's own
    rows that came back before the error, which only what ran could send. Not by the error's
    position: in a query of many it can point past the migration at fault (a ``BEGIN ATOMIC``
    left open takes in the text after it), or count bytes (a SQL_ASCII database). With no such
    row, the query failed before its first step ran (a syntax error anywhere, a character the
    database's encoding lacks), and is sent again a migration a query (:class:`_Unattributed`),
    which names the file as a run without ``--group`` would, at the cost of a moment."""
    if count == 1:
        return 0
    kinds = [name for name in map(_first_column, received or []) if name in (_SET, _READ)]
    if not kinds:
        raise _Unattributed() from exc
    # Past a migration's read row, what failed was the next one's fresh session or settings.
    return min(kinds.count(_SET) - 1 + (kinds[-1] == _READ), count - 1)


def _first_column(result: Any) -> bytes | None:
    return result.fname(0) if result.nfields else None


def _marked_rows(cursor: psycopg.Cursor) -> list[tuple[bytes, tuple[Any, ...]]]:  # type: ignore[type-arg]
    """The query's own rows, in order, each with its kind; every other result is the steps'."""
    rows: list[tuple[bytes, tuple[Any, ...]]] = []
    while True:
        name = _first_column(cursor.pgresult) if cursor.pgresult is not None else None
        if name in (_SET, _READ):
            rows.append((name, cursor.fetchone()))
        if not cursor.nextset():
            return rows


def revert(conn: psycopg.Connection, migration_id: str, options: Options,
           sql_dir: Path | None = None) -> Outcome | None:
    """Revert the migration applied last, from the SQL its ledger row holds; None if not applied.

    With ``sql_dir``, a revert file of the same version there must hold the same SQL as
    the ledger; when there is none (a code rollback removed it), the ledger's copy runs.
    """
    if not is_version(migration_id):
        raise ConfigError(f"migration id {migration_id!r} is not a number like 027")
    with migration_lock(conn, options.wait):
        applied = ledger.read(conn)
        entry = applied.get(int(migration_id))
        if entry is None:
            log.info("migration %s is not applied: nothing to revert", migration_id)
            return None
        latest = ledger.latest(applied)
        if latest is not entry:
            raise Refused(
                f"cannot revert {entry.id}: {latest.id} ({latest.name}) was applied after it "
                f"(at {latest.applied_at.isoformat(timespec='seconds')}); revert {latest.id} first"
            )
        if sql_dir is not None:
            _refuse_a_different_revert_file(entry, sql_dir)
        _conforming_strings(conn)
        started = time.monotonic()
        source = f"revert of {entry.id} (from the ledger)"
        steps = parse_steps(entry.revert_sql, source)
        for index, step in enumerate(steps):
            last = index == len(steps) - 1
            _run_step(conn, step, source, entry.id, options,
                      (lambda c: ledger.forget(c, entry)) if last else None)
        return Outcome(entry.id, entry.name, "reverted", time.monotonic() - started,
                       tuple(s.name for s in steps))


def _refuse_a_different_revert_file(entry: ledger.Entry, sql_dir: Path) -> None:
    """The ledger's revert SQL runs; a revert file that says otherwise means someone is mistaken.

    Either the file was edited after the migration was applied (the edit would never
    run), or the ledger was; both are for a person to settle, not the runner.
    """
    folder = sql_dir / REVERT_DIR
    try:
        names = sorted(os.listdir(folder))  # names, not paths: a rollback of 1,000 migrations runs this 1,000 times
    except (FileNotFoundError, NotADirectoryError):
        return  # no revert files at all: the ledger's copy runs
    except OSError as exc:
        raise ConfigError(f"cannot read {folder} ({exc.strerror}) to compare its revert of {entry.id} with the "
                          "ledger's: make it readable, or pass another --sql-dir") from None
    for name in names:
        match = FILE_PATTERN.match(name)
        if not match or int(match.group("id")) != entry.sort_key:
            continue
        path = folder / name
        if read_text(path) != normalise(entry.revert_sql):
            raise Refused(
                f"cannot revert {entry.id}: the revert SQL in the ledger (appdb.migrations row {entry.id!r}, "
                f"applied {entry.applied_at.isoformat(timespec='seconds')}) differs from {path}; restore {path} "
                "to what was applied, or, if the file's change is meant, write it as a new migration"
            )


# --- running one step ----------------------------------------------------------------


def _run_step(
    conn: psycopg.Connection,
    step: Step,
    source: str,
    migration_id: str,
    options: Options,
    on_commit: Callable[[psycopg.Connection], None] | None,
) -> None:
    """Run one step, retrying lock timeouts; ``on_commit`` runs in the step's own transaction."""
    for attempt in range(options.lock_retries + 1):
        try:
            if step.transactional:
                with conn.transaction():
                    expected, found = _run_in_transaction(conn, step, options)
                    _check_still_ours(conn, expected, migration_id, step, found)
                    if on_commit:
                        on_commit(conn)
            else:
                expected = _set_timeouts(conn, step, options, local=False)
                try:
                    _drop_invalid_leftovers(conn, step, source, migration_id)
                    if not step.is_empty:
                        conn.execute(step.sql)
                finally:
                    if not conn.closed and not conn.broken:
                        # The next step's text must be read as the lexer read it: the step may
                        # have turned standard_conforming_strings off for the session.
                        conn.execute("; ".join([*(f"RESET {name}" for name in expected
                                                  if name != "standard_conforming_strings"),
                                                _CONFORMING_FOR_THE_SESSION]))
                if on_commit:
                    with conn.transaction():
                        expected = _set_timeouts(conn, step, options, local=True)
                        _check_still_ours(conn, expected, migration_id, step)
                        on_commit(conn)
            return
        except (errors.LockNotAvailable, errors.DeadlockDetected) as exc:
            # Either way the server rolled the whole step back, so it is safe to run again.
            _pause_or_give_up(exc, attempt, options, migration_id, step)
        except psycopg.Error as exc:
            raise _failure(exc, conn, step, source, migration_id) from None


def _pause_or_give_up(exc: psycopg.Error, attempt: int, options: Options, migration_id: str, step: Step) -> None:
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
_CONFORMING_FOR_THE_SESSION = "SELECT pg_catalog.set_config('standard_conforming_strings', 'on', false)"


def _conforming_strings(conn: psycopg.Connection) -> None:
    """The session reads strings as the lexer did, whatever a database or role default says.

    The server parses a step's whole text before the step's own ``set_config`` runs, so the
    session value is what the first step is read with.
    """
    _for_the_session(conn, _CONFORMING_FOR_THE_SESSION)


def _fresh_session(conn: psycopg.Connection) -> None:
    """The session as it began (its session user, ``RESET ALL``: search_path, role, every
    setting; no temporary table, prepared statement, open cursor or LISTEN left), reading
    strings as the lexer does. Not ``DISCARD ALL``: it would let go of the migration lock.
    (appdb/connection.py never lets psycopg prepare a statement of its own, so none of
    psycopg's goes.)"""
    _for_the_session(conn, _FRESH_SESSION)


# CLOSE ALL before DISCARD TEMP: inside a --group transaction, a cursor still open over a temporary
# table would keep it from being dropped.
_FRESH_SESSION = ("SET SESSION AUTHORIZATION DEFAULT; RESET ALL; CLOSE ALL; DISCARD TEMP; DEALLOCATE ALL; "
                  f"UNLISTEN *; {_CONFORMING_FOR_THE_SESSION}")


def _record_group(conn: psycopg.Connection, batch: list[Migration], outcomes: list[Outcome], options: Options,
                  ledger_exists: bool) -> None:
    """The group's ledger rows, in one statement, as the login that runs appdb and with a
    step's timeouts (the last migration may have changed role or settings for its session)."""
    _fresh_session_within(conn)
    _set_timeouts(conn, batch[-1].steps[-1], options, local=True)
    ledger.record_all(conn, [(migration, int(outcome.seconds * 1000)) for migration, outcome in zip(batch, outcomes)],
                      ledger_exists=ledger_exists)


def _fresh_session_within(conn: psycopg.Connection) -> None:
    """:func:`_fresh_session` inside the caller's transaction (``--group``), which it leaves
    open: before a group's ledger rows (between two of its migrations, the step's query does it)."""
    conn.execute(_FRESH_SESSION)


def _for_the_session(conn: psycopg.Connection, text: str) -> None:
    """Run ``text`` so that it lasts for the session: committed at once on a connection that is not autocommit."""
    conn.execute(text)
    if conn.info.transaction_status == TransactionStatus.INTRANS:
        conn.commit()


def _settings(conn: psycopg.Connection, step: Step, options: Options) -> dict[str, str]:
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


def _run_in_transaction(conn: psycopg.Connection, step: Step, options: Options) -> tuple[dict[str, str], tuple[str, ...]]:
    """Set the settings locally, run the step, read the settings back: one round trip, not three.

    One simple-protocol query, ``SELECT set_config(...);`` + the step + ``SELECT
    current_setting(...)``, inside the transaction the caller opened: the same statements in
    the same order as three queries would be, and the server parses the whole text before it
    runs any of it. Returns the settings as the server set them and as they are after the
    step, for :func:`_check_still_ours`. Only for transactional steps: a ``transaction=false``
    step runs alone, as PostgreSQL runs several statements of one query in one transaction.
    (``apply --group`` sends many migrations so in one query: :func:`_run_chunk`.)
    """
    settings = _settings(conn, step, options)
    names = list(settings)
    prefix, suffix = _around_step(conn, tuple(settings.items()))
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


def _around_step(conn: psycopg.Connection, settings: tuple[tuple[str, str], ...],
                 lock_checked: bool = True, mark: str | None = None) -> tuple[str, str]:
    """The text before and after a transactional step: set_config calls; then current_setting
    reads and whether the migration lock is still held; then standard_conforming_strings on for
    the session, whatever the step did to it, so that the next step is read as the lexer read it.

    ``lock_checked=False``: the caller checks the migration lock itself, before its commit
    (:func:`_apply_group`), and the lock reads as held here. ``mark``: the two rows are named
    ``<mark> set`` and ``<mark> read``, and end with the server's clock (:func:`_run_chunk`).
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
            sql.SQL(", ").join(reads), sql.SQL(_CONFORMING_FOR_THE_SESSION)).as_string(conn)
        _AROUND[key] = prefix, suffix
    return _AROUND[key]


def _set_timeouts(conn: psycopg.Connection, step: Step, options: Options, local: bool) -> dict[str, str]:
    """Set the step's timeouts (transaction-local, or for the session); return them as the server has them."""
    settings = _settings(conn, step, options)
    row = conn.execute(
        "SELECT " + ", ".join("pg_catalog.set_config(%s, %s, %s)" for _ in settings),
        [value for name, setting in settings.items() for value in (name, setting, local)],
    ).fetchone()
    return dict(zip(settings, row))


def _check_still_ours(conn: psycopg.Connection, expected: dict[str, str], migration_id: str, step: Step,
                      found: tuple[str, ...] | None = None) -> None:
    """Still inside the runner's transaction, with its settings in force; else nothing is recorded.

    Files may not hold transaction control (refused at load), but a step could still
    end the transaction or lift the timeouts some other way (a ``SET``, a ``RESET ALL``).
    ``found``: the settings as already read after the step, then whether the lock is held
    (:func:`_run_in_transaction`). The migration lock must still be ours: a step that let go
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


def _failure(exc: psycopg.Error, conn: psycopg.Connection, step: Step, source: str, migration_id: str) -> MigrationError:
    """One line that says where it failed and why; the step's transaction is already rolled back."""
    diag = exc.diag
    message = _message(exc)
    if conn.broken or isinstance(exc, errors.AdminShutdown):
        return MigrationError(
            f"{migration_id}, step {step.name}: the connection to the server was lost ({message}); "
            "the step was rolled back and nothing after it ran: run apply again"
        )
    if diag.sqlstate in REFUSAL_SQLSTATES:
        hint = f" ({diag.message_hint})" if diag.message_hint else ""
        return Refused(f"{migration_id} refused: {message}{hint}")
    line = step.first_line
    if diag.statement_position:
        # A transactional step was sent after its settings (_run_in_transaction, _run_chunk): count from its start.
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


def _message(exc: psycopg.Error) -> str:
    """The server's one-line message, else the first line of psycopg's."""
    return exc.diag.message_primary or (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _label(path: Path) -> str:
    """The path as a person would type it: relative to where they stand, when it can be."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
