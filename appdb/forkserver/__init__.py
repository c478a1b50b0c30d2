"""A fork server for commands run one after another: one warm interpreter, a fresh process per command.

Why: removing migrations (a code rollback, or ``pulumi destroy``) makes Pulumi delete one
command resource per migration, newest first, one after the other, and each delete runs
``./bin/appdb revert ID``. Most of such a process is start-up: importing psycopg alone
takes about 100 ms, the revert itself a few. A destroy of 100 migrations spent about
20 s starting Python (issue 20). The same holds for a no-op ``apply``, ``status`` and
``verify`` run in a row by a pipeline or a person: the commands in ``SERVED`` take the flag,
and ``APPDB_FORK_SERVER=1`` asks for it on each of them.

How: a command run with ``--fork-server`` first asks a server for this checkout (a Unix
socket, named for the interpreter, appdb's code and the caller's identity) to run it.
The server hands the caller to a relay, which passes the command to its worker; the worker
takes over the caller's stdin, stdout and stderr (passed with SCM_RIGHTS), its environment,
folder, umask, signal dispositions and arguments, and runs :func:`appdb.cli.main` exactly as a
new process would (its own connection, lock and ledger reads); the relay sends the worker's
exit status back, and it becomes the caller's. Each relay and its worker are forked ahead,
while the command before runs, and serve one command. Without a server the caller runs the command itself, after forking
one: it has just imported what the served commands need and has not yet connected, so the server
starts warm and holds no connection. The server exits after ``server.IDLE_SECONDS`` without
a request, and after ``server.MAX_SECONDS`` in all.

Where each part lives: ``caller`` (hand a command over, take its status), ``address`` (the
socket's name and private folder), ``identity`` (what a worker takes from its server),
``protocol`` (the bytes between them), ``server`` (listen, hand each caller over), ``relay``
(check the caller, pass its command on, send back its status) and ``worker`` (become the
caller's process and run the command). The first four are every served command's start-up and
import builtins only; the others are loaded only where a server starts.

What it must never do, and how it does not:

- Serve another OS user, or talk to one: the socket lives in a folder only its owner can
  enter, in a parent nobody else can rename it in (else the command runs on its own);
  the server checks the caller's uid (``SO_PEERCRED``), and the caller the server's,
  before either sends anything.
- Lend more rights than the caller has, or other ones: a worker runs with the server's
  groups, capabilities, seccomp filters, namespaces, root folder and security label, so the
  server serves only a caller whose are the same (:func:`identity`, from ``/proc``: of seccomp
  the mode and the number of filters, which a process can only add to), the caller sends
  only to such a server, and the socket's name covers them too. A sandbox of the same uid
  (bwrap, ``unshare --net``) is not served.
- Run stale code or settings: the name covers the interpreter, its flags and module path,
  the size and mtime of every appdb source file and of every file of the packages it imports
  from the virtualenv (psycopg; ``address.DEPENDENCIES``), the name of every package installed
  there (so its version), and every variable of the environment but
  those each command reads for itself (``PG*``, ``DATABASE_URL``, ``APPDB_*``: libpq's at each
  connect, appdb's own), so a changed checkout or setting (``PSYCOPG_IMPL``, ``LD_PRELOAD``, the
  locale) gets a server of its own.
- Outlive its caller's intent: when the caller dies (Pulumi cancelled), the worker gets
  SIGTERM, then SIGKILL ``relay.KILL_AFTER_SECONDS`` later; its step rolls back. Ctrl-C in
  the caller is SIGINT to the worker (exit 130, as ever), held until the worker has the
  caller's dispositions so that none is lost. A worker whose relay dies goes too.
- Hold a reader up: the server closes every descriptor it inherited at once; pulumi-command
  waits for the end of its pipes, not for the server. Nor hang a caller: a stopped server
  (``kill -STOP``, a debugger) is passed over, and a stopped relay or worker replaced.
- Change a result: a server that cannot be reached, or that closes before a worker has the
  command, is passed over and the command runs in its own process. Once a worker has it (the
  server says so), it is never run again: a status that does not come (its relay killed) is
  exit 1 and one line saying so, as a killed process of its own would have left it. A served caller skips ``site`` (bin/appdb's
  ``-S``), so where ``site`` changes the environment, folder or umask (a ``sitecustomize``),
  no server is started.

What it does not carry: resource limits, the cgroup and an I/O priority set apart from the
nice value are the first caller's (the scheduling policy, nice value, CPU affinity and OOM
score are in the socket's name), and ``ps`` shows a worker with the first caller's arguments
(so a caller with a password in any argument, which ``/proc/PID/cmdline`` shows every user,
starts no server). Ctrl-Z (SIGTSTP) stops the caller, not its worker. The server
keeps the first caller's environment (``PGPASSWORD`` included) for its life, as that caller did
for its own; like any process's, ``/proc/PID/environ`` shows it only to the same user and root.
Descriptors other
than stdin, stdout and stderr stay with the caller, so a caller whose arguments or environment
name one by path (``PGSERVICEFILE=<(...)``, ``/dev/fd/N``, ``/proc/self/...``) runs on its own.
The server itself is a daemon, left to PID 1 when it exits, as any is; the relays it waits for.
Linux only (``SO_PEERCRED``,
``pidfd_open``, ``/proc``); elsewhere every command runs on its own.
"""

from __future__ import annotations

import os
import sys

# typing is 2 ms to import, and every revert of a chain starts here: the annotation only.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

# The flag that asks for a fork server (components/migrations.py sets it on every revert), and
# the variable that asks for one for every command that takes the flag, with one of ON.
FLAG = "--fork-server"
VARIABLE = "APPDB_FORK_SERVER"
ON = ("1", "true", "yes", "on")
# The commands that take the flag: those run again and again, whose start-up is most of their
# time. Any other command with the flag is the CLI's usage error, with no server started.
SERVED = ("revert", "apply", "status", "verify")


def asked(argv: list[str]) -> bool:
    """Whether ARGS, or the environment, ask for a fork server."""
    return FLAG in argv or os.environ.get(VARIABLE, "").strip().lower() in ON


def main(argv: list[str]) -> int:
    """``python -m appdb ARGS``: through a fork server when ARGS ask for one, else directly."""
    from appdb.__main__ import load_site
    from appdb.forkserver.caller import run_via_server, supported

    if not asked(argv) or not argv or argv[0] not in SERVED or not supported():
        load_site()
        from appdb.cli import main as cli_main

        return cli_main(argv)
    from appdb.forkserver.address import socket_path

    try:
        path = socket_path()
    except Exception:  # noqa: BLE001 - a checkout or /proc that cannot be read: the command runs here
        path = None
    if path is not None:
        status = run_via_server(path, argv)
        if status is not None:
            _leave(status)
    # Not served: this process runs the command (and starts a server) with everything loaded.
    unloaded = _request(argv)
    load_site()
    # A served caller skips site (bin/appdb's -S): where site changes what a caller sends (a
    # sitecustomize setting PGSSLMODE, say), a served command would lack it. No server, then:
    # every revert runs as a process of its own.
    site_changes_requests = _request(argv) != unloaded
    from appdb.forkserver.server import preload, start_server

    preload()
    from appdb.cli import main as cli_main

    # A process that began with 0, 1 or 2 closed has no sys.stdin/stdout/stderr, and a server
    # forked from it would print nothing for any caller: it runs its command on its own.
    if (path is not None and _parses_without_secrets(argv) and None not in (sys.stdin, sys.stdout, sys.stderr)
            and not site_changes_requests):
        start_server(path)
    return cli_main(argv)


def _request(argv: list[str]) -> bytes | None:
    """What this process would send a server (environment, folder, umask, signals); None
    where it could not (its folder is gone)."""
    from appdb.forkserver.protocol import encode_request

    try:
        return encode_request(argv)
    except OSError:
        return None


def _leave(status: int) -> NoReturn:
    """End the caller at once with its command's status. It only handed the command over: the
    worker wrote the output to the same descriptors, and nothing here has a clean-up to run. An
    interpreter's orderly shutdown is about 1.5 ms of every revert in a chain (issue 20)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()  # Ctrl-C's one line (interrupted_status), should it still wait there
        except Exception:  # noqa: BLE001 - a closed stream: the status is what remains to say
            pass
    os._exit(status)


def _parses_without_secrets(argv: list[str]) -> bool:
    """Whether the arguments are a command at all (a usage error starts no server), and hold no
    password (``--dsn postgresql://u:secret@...``): the server and the processes it forks ahead keep
    the first caller's arguments, which ``/proc/PID/cmdline`` shows every user, for their life.
    Every argument counts, not only the ``--dsn`` argparse kept: a wrapper's ``--dsn`` before the
    user's, or a DSN where an id goes, is in the command line all the same."""
    import contextlib
    import io

    from appdb.cli import build_parser
    from appdb.connection import dsn_secrets
    from appdb.errors import ConfigError

    try:  # quietly: --help would print, and the command itself prints it once more
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            build_parser().parse_args(argv)
    except (ConfigError, SystemExit):
        return False
    return not any(dsn_secrets(argument) for argument in argv)
