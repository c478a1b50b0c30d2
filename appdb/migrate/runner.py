"""The runner: apply and revert, against the ledger (appdb/migrate/ledger.py), under the migration lock.

Each migration's steps run as appdb/migrate/steps.py says: each in its own transaction, with
its timeouts, retries and checks, from a fresh session. ``apply --group`` commits consecutive
migrations together instead (appdb/migrate/group.py).

Order: a pending migration older than the newest applied one is refused (Flyway's
``outOfOrder=false``; the rule lives in appdb/migrate/ledger.py, with the state), and only
the migration applied last (by ``applied_at``) may be reverted.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import psycopg

from appdb.errors import ConfigError, LockTimeout, MigrationError, Refused
from appdb.migrate import ledger
from appdb.migrate.files import FILE_PATTERN, REVERT_DIR, Migration, find, is_version, normalise, parse_steps, read_text
from appdb.migrate.group import apply_group, groupable, groups, why_alone
from appdb.migrate.lock import migration_lock
from appdb.migrate.options import Options
from appdb.migrate.outcome import ALONE, WOULD_APPLY, Outcome, Progress
from appdb.migrate.steps import conforming_strings, fresh_session, run_step, shown_path

# What the callers (appdb/cli.py, appdb/schema/fresh.py, the tests) take from here.
__all__ = ["LockTimeout", "MigrationError", "Options", "Outcome", "Progress", "Refused", "apply", "revert"]

log = logging.getLogger(__name__)


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
    commits as one (:func:`groups`, :func:`apply_group`); ``progress`` hears of a group's
    migrations once it has committed.
    """
    target = find(migrations, only) if only is not None else None
    if dry_run:
        return _plan(_pending(conn, migrations, target), group)
    outcomes: list[Outcome] = []
    with migration_lock(conn, options.wait):
        fresh_session(conn)
        # Looked up once: under the lock only this run writes it, and its first row creates it.
        ledger_exists = ledger.exists(conn)
        pending = _pending(conn, migrations, target)
        for batch in groups(pending) if group else [[migration] for migration in pending]:
            if group and groupable(batch[0]):
                done = apply_group(conn, batch, options, ledger_exists)
            else:
                done = [_apply_one(conn, batch[0], options, ledger_exists)]
            ledger_exists = True
            # Told as soon as it is committed: whatever stops the run after this (Ctrl-C, a lost
            # connection, the fresh session's own failure), the caller has heard of it.
            for outcome in done:
                outcomes.append(outcome)
                if progress:
                    progress(outcome)
            # What a migration set for its session (a SET search_path in a transaction=false
            # step) must not reach the next one: else one run and several (apply --only, one
            # by one) would build different schemas from the same files.
            fresh_session(conn)
    return outcomes


def _plan(pending: list[Migration], group: bool) -> list[Outcome]:
    """What a dry run says: each pending migration and its steps; with ``group``, the
    transaction it would commit in (:func:`groups`), or that it would run alone."""
    planned: list[Outcome] = []
    for batch in groups(pending) if group else [[migration] for migration in pending]:
        name = because = None
        if group:
            name = f"{batch[0].id}-{batch[-1].id}" if len(batch) > 1 else ALONE
            because = why_alone(batch[0]) if len(batch) == 1 else None
        planned += [Outcome(m.id, m.name, WOULD_APPLY, steps=tuple(s.name for s in m.steps), group=name,
                            alone_because=because) for m in batch]
    return planned


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
            log.warning("migration %s (%s) is applied but its file is gone: its revert is to run (in a "
                        "`pulumi up`, the delete of its resource runs it after this; by hand: 'appdb revert %s')",
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
    label = shown_path(migration.path)

    def record(c: psycopg.Connection) -> None:
        ledger.record(c, migration, int((time.monotonic() - started) * 1000), ledger_exists=ledger_exists)

    for index, step in enumerate(migration.steps):
        last = index == len(migration.steps) - 1
        log.info("%s: step %s", migration.id, step.name)
        run_step(conn, step, f"{label}", migration.id, options, record if last else None)
    return Outcome(migration.id, migration.name, "applied", time.monotonic() - started,
                   tuple(s.name for s in migration.steps))


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
        conforming_strings(conn)
        started = time.monotonic()
        source = f"revert of {entry.id} (from the ledger)"
        steps = parse_steps(entry.revert_sql, source, from_ledger=True)
        for index, step in enumerate(steps):
            last = index == len(steps) - 1
            run_step(conn, step, source, entry.id, options,
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
