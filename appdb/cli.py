"""The command line: argparse subcommands, each a function ``(args) -> int``.

A command computes, prints its result's ``lines()`` (or ``as_dict()`` with ``--json``),
and raises when the result is a failure. Expected failures are raised, never printed
by a command: ``main`` prints the one line, ``appdb: error: ...``, to stderr and exits
with the code their error class carries (1: the work failed or was refused; 2: usage or
configuration). Passwords are redacted from every message.
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Callable

from appdb import __version__
from appdb.access import SCHEMA
from appdb.errors import INTERRUPTED, INTERRUPTED_EXIT, AppdbError, ConfigError, Interrupted
from appdb.migrate.options import Options

log = logging.getLogger("appdb")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is our one-line error with exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(f"{message} (see: {self.prog} --help)")


def _sql_dir(args: argparse.Namespace) -> Path:
    return Path(args.sql_dir or os.environ.get("APPDB_SQL_DIR") or "sql")


def _migrations(args: argparse.Namespace) -> list:
    from appdb.migrate.files import discover

    return discover(_sql_dir(args))


def _connect(args: argparse.Namespace):
    from appdb.connection import connect

    return connect(args.dsn)


def _seconds(text: str) -> float:
    """A flag's seconds: a finite number, at least 0 (nan would make --wait wait for ever)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (finite, at least 0)")
    return value


def _options(args: argparse.Namespace, allow_data_loss: bool = False):
    # Below 1 ms, PostgreSQL's lock_timeout would round to 0: no limit at all; above a day, the
    # server refuses it mid-run.
    if not 0.001 <= args.lock_timeout <= 86400 or args.lock_retries < 0:
        raise ConfigError("--lock-timeout must be from 0.001 (1 ms) to 86400 (a day), --lock-retries at least 0")
    return Options(lock_timeout=args.lock_timeout, lock_retries=args.lock_retries, wait=args.wait,
                   allow_data_loss=allow_data_loss)


def _print_json(data: Any) -> None:
    import json

    print(json.dumps(data, indent=2, default=str))


# --- subcommands ------------------------------------------------------------------------


def _print_lines(lines: list[str]) -> None:
    for line in lines:
        print(line)


def _show(args: argparse.Namespace, result: Any) -> None:
    """A result as --json asks (its ``as_dict()``), else as lines for a person (its ``lines()``)."""
    if args.json:
        _print_json(result.as_dict())
    else:
        _print_lines(result.lines())


def cmd_status(args: argparse.Namespace) -> int:
    from appdb.migrate import ledger

    migrations = _migrations(args)
    with _connect(args) as conn:
        current = ledger.status(conn, migrations)
    _show(args, current)
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    import psycopg

    from appdb.migrate import ledger, runner

    migrations = _migrations(args)
    options = _options(args)

    done: list[runner.Outcome] = []

    def progress(outcome: runner.Outcome) -> None:
        done.append(outcome)
        if not args.json:
            print(outcome.line(), flush=True)

    with _connect(args) as conn:
        try:
            outcomes = runner.apply(conn, migrations, options, only=args.only, dry_run=args.dry_run,
                                    progress=progress, group=args.group)
        except (AppdbError, KeyboardInterrupt, psycopg.Error) as exc:
            if args.json:  # what was applied before the failure or Ctrl-C; the error is main's line on stderr
                # "uncertain": stopped as they committed, these may be applied or not ('appdb status' tells).
                uncertain = getattr(exc, "uncertain", [])
                _to_stdout(lambda: _print_json({"dry_run": args.dry_run, "complete": False,
                                                "outcomes": [o.as_dict() for o in done], "uncertain": uncertain}))
            raise
        current = ledger.status(conn, migrations) if args.json else None
    if args.json:
        _print_json({"dry_run": args.dry_run, "complete": True, "outcomes": [o.as_dict() for o in outcomes],
                     **current.as_dict()})
    elif args.dry_run:
        _print_lines([outcome.line() for outcome in outcomes] or ["nothing to apply"])
    elif not outcomes and args.only:
        from appdb.migrate.files import find

        print(f"nothing to apply: {find(migrations, args.only).id} is already applied")
    elif not outcomes:
        print("nothing to apply: every migration is applied")
    return 0


def cmd_revert(args: argparse.Namespace) -> int:
    from appdb.migrate import runner

    with _connect(args) as conn:
        outcome = runner.revert(conn, args.id, _options(args, allow_data_loss=args.allow_data_loss),
                                sql_dir=_sql_dir(args))
    print(outcome.line() if outcome else f"{args.id} is not applied: nothing to revert")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from appdb.checks import verify

    migrations = _migrations(args)
    with _connect(args) as conn:
        report = verify.run(conn, migrations)
    _show(args, report)
    report.raise_if_failed()
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from appdb.checks import inspect

    migrations = _migrations(args)
    with _connect(args) as conn:
        result = inspect.run(conn, migrations)
    _show(args, result)
    return 0


def _snapshot_path(args: argparse.Namespace) -> Path:
    from appdb.schema.snapshot import default_path

    return Path(args.snapshot) if args.snapshot else default_path(_sql_dir(args))


def cmd_schema(args: argparse.Namespace) -> int:
    """Print the live description, or build the snapshot from the migrations: --check, --write."""
    if not (args.check or args.write):
        from appdb.schema.describe import describe

        with _connect(args) as conn:
            description = describe(conn, args.schema or SCHEMA)
        sys.stdout.write(description.to_json() if args.json else description.to_text())
        return 0

    from appdb.errors import StaleSnapshot
    from appdb.schema import snapshot

    if args.dsn:
        raise ConfigError("--check and --write build their own throwaway database: drop --dsn")
    path = _snapshot_path(args)
    fresh = snapshot.build(_migrations(args), schema=args.schema or SCHEMA)
    if args.write:
        snapshot.write(path, fresh)
        print(f"wrote {path}: {fresh.summary()}")
        return 0
    result = snapshot.check(path, fresh)
    _show(args, result)
    if not result.ok:
        raise StaleSnapshot(result.failure())
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    """The live database against the committed snapshot: exit 0 when they match, 1 otherwise."""
    from appdb.errors import DriftFound
    from appdb.schema import drift, snapshot

    path = _snapshot_path(args)
    expected = snapshot.read(path)
    if args.schema and args.schema != expected.schema:
        raise ConfigError(f"{path} describes schema {expected.schema!r}, not {args.schema!r}")
    ignore_path = Path(args.ignore) if args.ignore else drift.default_ignore_path(_sql_dir(args))
    rules = drift.read_ignore(ignore_path, required=bool(args.ignore))
    with _connect(args) as conn:
        report = drift.run(conn, expected, rules, source=str(path), ignore_path=str(ignore_path))
    if args.json:
        _print_json({"database": report.database, "snapshot": str(path), **report.as_dict()})
    else:
        _print_lines(report.lines())
    if not report.ok:
        raise DriftFound(report.failure())
    return 0


def cmd_new(args: argparse.Namespace) -> int:
    from appdb.migrate.new import new_migration

    forward, revert = new_migration(_sql_dir(args), args.name)
    print(f"created {forward}\ncreated {revert}")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    """What a live database has in the schema, as the next migration and its revert."""
    from appdb.adopt.pull import pull

    result = pull(args.dsn, _sql_dir(args), args.name, schema=args.schema)
    print(f"pulled {result.objects} objects of schema {args.schema} from {result.source}\n"
          f"created {result.forward}\ncreated {result.revert}\n"
          f"review them; on {result.source} record the migration without running it: "
          f"appdb baseline {result.forward.name.split('_', 1)[0]}")
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    """Record a migration as applied, without running it, once the catalog shows it is there."""
    from appdb.adopt.baseline import baseline
    from appdb.connection import where
    from appdb.migrate.files import find

    migrations = _migrations(args)
    find(migrations, args.id)  # an unknown id is a usage error, before any connection
    with _connect(args) as conn:
        database = where(conn)
        checked = baseline(conn, migrations, args.id, schema=args.schema, wait=args.wait)
    print(f"{args.id} recorded as applied on {database} without running it: "
          f"{checked} objects it makes or drops match")
    return 0


def cmd_local(args: argparse.Namespace) -> int:
    """``url`` and ``password`` alone print a password: ``up`` and ``reset`` land in deploy logs, so they mask it."""
    from appdb.connection import redact
    from appdb.local.cluster import DEFAULT_HOME, DEFAULT_PORT, Cluster

    home = Path(args.home or os.environ.get("APPDB_LOCAL_HOME") or DEFAULT_HOME)
    cluster = Cluster(home=home, port=_local_port(args.port, DEFAULT_PORT))
    cluster.check_home(changes=args.action in ("up", "reset"))
    made_with = cluster.listening_port()
    if made_with is not None and not 0 < made_with < 65536:
        made_with = None  # a configuration no server can start with: a reset leaves it behind
    asked = args.port is not None or bool(os.environ.get("APPDB_LOCAL_PORT"))
    again = f"bin/appdb local reset{f' --home {shlex.quote(str(home))}' if args.home else ''}"
    if made_with is not None and made_with != cluster.port and not (args.action == "reset" and asked):
        # It listens where it was made to: a URL with another port would lead elsewhere. A reset
        # makes it anew there too, unless a port is asked for.
        if asked:
            print(f"appdb: notice: the local database in {home} listens on port {made_with}, set when it was made, "
                  f"not {cluster.port}: '{again}' makes it anew on {cluster.port}", file=sys.stderr)
        cluster.port = made_with
    if args.action in ("up", "reset"):
        try:
            replaced = cluster.up(seed=args.seed) if args.action == "up" else cluster.reset(seed=args.seed)
        except AppdbError as exc:
            from appdb.local.throwaway import port_in_use

            if not port_in_use(cluster.port):  # whatever the server's language said of it
                raise
            raise type(exc)(f"{exc}; port {cluster.port} is taken: stop what listens there, or make the local "
                             f"database anew on another port (it wipes it): APPDB_LOCAL_PORT=<port> {again}, and keep "
                             "APPDB_LOCAL_PORT set for bin/deploy-local (which then says how to point the local "
                             "stack at that port)") from None
        if replaced:
            print(f"appdb: notice: this local database had the fixed passwords published in the repository; it now "
                  f"has random ones, in {cluster.password_file} (yours alone), and supabase_admin logs in only "
                  "through the socket; the URL is 'bin/appdb local url', and the next bin/deploy-local gives "
                  "app_backend its new one in the local stack too", file=sys.stderr)
        done = "ready" if args.action == "up" else f"reset{' and seeded' if args.seed else ''}"
        print(f"local database {done}: {redact(cluster.url())} (with its password: bin/appdb local url)")
    elif args.action == "down":
        if not cluster.is_initialised():
            raise ConfigError(f"no local database in {home}, so nothing was stopped: if it was started with "
                              "another APPDB_LOCAL_HOME or --home, give that one")
        was_running = cluster.is_running()
        cluster.down()
        print("local database stopped" if was_running else f"the local database in {home} was not running")
    elif args.action == "password":
        print(cluster.password(args.role))
    else:
        print(cluster.url())
    return 0


def _local_port(given: int | None, default: int) -> int:
    """--port, else APPDB_LOCAL_PORT, else ``default``; read when the command runs, so a bad
    value fails only ``local``, in one line, and the parser holds nothing from the environment."""
    raw = (os.environ.get("APPDB_LOCAL_PORT") or str(default)).strip()
    # ASCII digits, and few: int() takes '٥٤٣٢٢' and refuses '²' and 5,000 digits with a traceback.
    if given is None and not (raw.isascii() and raw.isdigit() and len(raw) <= 5):
        raise ConfigError(f"APPDB_LOCAL_PORT is {raw!r}, not a port number: set it to one (e.g. 54322), or unset it")
    port = int(raw) if given is None else given
    if not 0 < port < 65536:
        raise ConfigError(f"port {port} is outside 1-65535: choose another (--port or APPDB_LOCAL_PORT)")
    return port


# --- parser -----------------------------------------------------------------------------


@functools.cache
def build_parser() -> argparse.ArgumentParser:
    """Built once a process, and before the fork server forks (appdb/forkserver/): so nothing
    in it may depend on the environment, whose defaults each command reads when it runs."""
    # `new` touches only files: it takes the folder, not a connection string it would ignore.
    files = argparse.ArgumentParser(add_help=False)
    files.add_argument("--sql-dir", help="migrations folder (default: APPDB_SQL_DIR, else ./sql)")
    common = argparse.ArgumentParser(add_help=False, parents=[files])
    common.add_argument("--dsn", help="connection string (default: DATABASE_URL, else libpq's PG* variables)")
    common.add_argument("-v", "--verbose", action="store_true", help="log each step and server notice")

    parser = _Parser(prog="appdb", description="Migrations, verification and a local Supabase-shaped database.")
    parser.add_argument("--version", action="version", version=f"appdb {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    # The commands run again and again (a chain of reverts, a no-op apply, status and verify in a
    # pipeline or a shell) may share a warm appdb; each stays the process it would have been.
    served = argparse.ArgumentParser(add_help=False)
    served.add_argument("--fork-server", action="store_true",
                        help="run through a warm appdb kept for a few seconds between commands "
                             "(appdb/forkserver/; APPDB_FORK_SERVER=1 asks for it too): the same result, "
                             "without Python's start-up each time")

    status = sub.add_parser("status", parents=[common, served],
                            help="each migration: applied, pending, changed, removed")
    status.add_argument("--json", action="store_true", help="one JSON object: each migration and its state")
    status.set_defaults(func=cmd_status)

    locking = argparse.ArgumentParser(add_help=False)
    locking.add_argument("--lock-timeout", type=_seconds, default=Options.lock_timeout, metavar="S",
                         help=f"lock_timeout for each statement, in seconds (default {Options.lock_timeout:g})")
    locking.add_argument("--lock-retries", type=int, default=Options.lock_retries, metavar="N",
                         help=f"retries of a step after a lock timeout, with backoff (default {Options.lock_retries})")
    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument("--wait", type=_seconds, default=Options.wait, metavar="S",
                         help=f"how long to wait for another run's migration lock (default {Options.wait:g})")

    apply = sub.add_parser("apply", parents=[common, locking, waiting, served], help="apply pending migrations in order")
    apply.add_argument("--only", metavar="ID", help="apply just this migration")
    apply.add_argument("--dry-run", action="store_true", help="say what would be applied; change nothing")
    apply.add_argument("--group", action="store_true",
                       help="commit consecutive one-step migrations together, all or none (any other "
                            "runs alone): far fewer commits, but locks held to each commit, so for a new "
                            "database or a quiet window")
    apply.add_argument("--json", action="store_true", help="one JSON object: what was applied, and complete: false when a migration failed or Ctrl-C stopped it")
    apply.set_defaults(func=cmd_apply)

    revert = sub.add_parser("revert", parents=[common, locking, waiting, served],
                            help="revert the latest applied migration, from the ledger")
    revert.add_argument("id", metavar="ID")
    revert.add_argument("--allow-data-loss", action="store_true", help="allow a revert that drops rows")
    revert.set_defaults(func=cmd_revert)

    verify = sub.add_parser("verify", parents=[common, served], help="post-deploy checks; exit 1 if any fails")
    verify.add_argument("--json", action="store_true", help="one JSON object: each check and whether it passed")
    verify.set_defaults(func=cmd_verify)

    inspect = sub.add_parser("inspect", parents=[common], help="tables, constraints, indexes and findings")
    inspect.add_argument("--json", action="store_true", help="one JSON object instead of the text report")
    inspect.set_defaults(func=cmd_inspect)

    snapshot_file = argparse.ArgumentParser(add_help=False)
    snapshot_file.add_argument("--snapshot", metavar="FILE",
                               help="the schema snapshot (default: schema.snapshot in the migrations folder)")
    snapshot_file.add_argument("--schema", metavar="NAME", help="the schema (default: app; diff: the snapshot's)")

    schema = sub.add_parser("schema", parents=[common, snapshot_file],
                            help="describe the live schema; --check or --write the committed snapshot")
    mode = schema.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true",
                      help="exit 1 when the snapshot does not match a throwaway database built from the migrations")
    mode.add_argument("--write", action="store_true", help="rewrite the snapshot from a throwaway database")
    schema.add_argument("--json", action="store_true", help="the live description as JSON (without --check or --write)")
    schema.set_defaults(func=cmd_schema)

    diff = sub.add_parser("diff", parents=[common, snapshot_file],
                          help="the live schema against the snapshot; exit 1 on drift")
    diff.add_argument("--ignore", metavar="FILE",
                      help="the ignore list (default: drift-ignore.toml in the migrations folder, if present)")
    diff.add_argument("--json", action="store_true", help="one JSON object: the database, the snapshot and each difference")
    diff.set_defaults(func=cmd_diff)

    new = sub.add_parser("new", parents=[files], help="create the next migration and its revert")
    new.add_argument("name")
    new.set_defaults(func=cmd_new)

    pull = sub.add_parser("pull", parents=[common],
                          help="write the next migration and its revert from what a live database has")
    pull.add_argument("name", help="the migration's name, e.g. adopt_production")
    pull.add_argument("--schema", default=SCHEMA, help="the schema to pull (default: app)")
    pull.set_defaults(func=cmd_pull)

    baseline = sub.add_parser("baseline", parents=[common, waiting],
                              help="record a migration as applied without running it, where the database has it")
    baseline.add_argument("id", metavar="ID")
    baseline.add_argument("--schema", default=SCHEMA, help="the schema the migration makes (default: app)")
    baseline.set_defaults(func=cmd_baseline)

    local = sub.add_parser("local", help="the project's own Supabase-shaped PostgreSQL")
    local.add_argument("action", choices=["up", "down", "url", "reset", "password"])
    local.add_argument("--role", choices=["postgres", "app_backend"], default="postgres",
                       help="whose password `password` prints (default postgres)")
    local.add_argument("--seed", action="store_true", help="add a few auth users (up, reset)")
    local.add_argument("--home", help="the cluster's folder (default: APPDB_LOCAL_HOME, else .appdb/local)")
    local.add_argument("--port", type=int, help="its TCP port (default: APPDB_LOCAL_PORT, else 54322)")
    local.add_argument("-v", "--verbose", action="store_true")
    local.set_defaults(func=cmd_local)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        try:
            args = build_parser().parse_args(argv)
            verbose = getattr(args, "verbose", False)  # `new` has no connection to be verbose about
            logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                                format="appdb: %(levelname)s: %(message)s", stream=sys.stderr)
            if not verbose:
                # psycopg's own warnings are about its clean-up ("error ignored in rollback" after a
                # Ctrl-C mid-query): beside the one error line, noise; -v shows them.
                logging.getLogger("psycopg").setLevel(logging.ERROR)
            return args.func(args)
        except AppdbError as exc:
            lines = exc.lines
            _to_stdout(lambda: _print_lines(lines))  # the detail to act on, on stdout, then the one error line
            _error(str(exc), argv)
            return exc.exit_code
        except Exception as exc:
            import psycopg

            if not isinstance(exc, psycopg.Error):
                raise
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            _error(f"database error: {first}", argv)
            return 1
        except KeyboardInterrupt as exc:
            # Interrupted: Ctrl-C where "rolled back" would not be true; it says what is known.
            print(f"appdb: error: {exc if isinstance(exc, Interrupted) else INTERRUPTED}", file=sys.stderr)
            return INTERRUPTED_EXIT
        finally:
            # Output to a pipe waits in a buffer: written here, a reader that has gone is found
            # here, and not at the interpreter's exit (a warning and status 120).
            if sys.stdout is not None:
                sys.stdout.flush()
    except BrokenPipeError:
        # Whoever read the output stopped (`appdb apply | head -1`): no traceback, and no more
        # output to them, but one line on stderr, since the command may have stopped half-way
        # (apply prints each migration as it commits).
        _drop_stdout()
        _error("the output was closed before appdb finished (its reader stopped), so it stopped there; "
               "what was done is in the ledger: see 'appdb status'", argv)
        return 1


def _to_stdout(write: Callable[[], None]) -> None:
    """Write what goes with an error; a reader that has gone must not take the error's own line with it."""
    try:
        write()
        if sys.stdout is not None:
            sys.stdout.flush()
    except BrokenPipeError:
        _drop_stdout()


def _drop_stdout() -> None:
    """stdout to /dev/null (Python's advice for a reader that has gone): nothing more is written to it, and
    what waits in its buffer goes nowhere instead of failing again at exit."""
    _to_devnull(1)


def _to_devnull(fd: int) -> None:
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, fd)
    os.close(null)


def _error(message: str, argv: list[str]) -> None:
    """The one line on stderr, without any secret of the arguments, DATABASE_URL or PGPASSWORD.

    Every argument counts, not only --dsn's value: a DSN given without --dsn is echoed
    back by argparse as an unrecognised argument.
    """
    from appdb.connection import dsn_secrets, known_secrets
    from appdb.redact import redact

    # Each argument whole, and what follows the = of an --option=value (a misspelt --dsnn=...), read
    # as libpq reads a DSN: a URL's ?%70assword=... is a password too.
    candidates = [*argv, *(arg.partition("=")[2] for arg in argv if arg.startswith("-") and "=" in arg)]
    dsns = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--dsn"]
    dsns += [arg.removeprefix("--dsn=") for arg in argv if arg.startswith("--dsn=")]
    secrets = known_secrets().union(*(known_secrets(dsn) for dsn in dsns),
                                    *(dsn_secrets(text) for text in candidates if text))
    try:
        # Whole secrets only: the message may hold a migration's or the server's text, where masking
        # pieces would tell which pieces are in a password (appdb/redact.py).
        print(f"appdb: error: {redact(' '.join(message.split()), secrets, pieces=False)}", file=sys.stderr,
              flush=True)
    except BrokenPipeError:
        _to_devnull(2)  # stderr's reader has gone too: the exit status is all that is left
