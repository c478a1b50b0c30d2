"""The server's side: one warm interpreter that forks a fresh process for each command.

:func:`start_server` forks a detached server from a caller that found none (it has just
imported what a revert needs and has not yet connected, so the server starts warm and holds
no connection). :func:`serve` accepts callers on the socket and hands each to a relay
(:mod:`appdb.forkserver.relay`), forked ahead with its worker (:mod:`appdb.forkserver.worker`)
while the command before runs. The package's docstring says what a server must never do, and
how it does not.
"""

from __future__ import annotations

import os
import signal
import socket
import sys

from appdb.forkserver.identity import fit_to_serve, identity
from appdb.forkserver.relay import relay

# How long the server waits for the next command: Pulumi's deletes follow one another
# within milliseconds, but a busy CI machine can take seconds between two.
IDLE_SECONDS = 10.0
# A server never lives longer than this, however busy.
MAX_SECONDS = 600.0
# At its end, how long the server waits for its waiting relay to leave before it kills it.
LEAVE_SECONDS = 2.0
# What the served commands import: loaded once in the server, before it forks a worker.
PRELOAD = ("appdb.cli", "appdb.connection", "appdb.redact", "appdb.migrate.runner", "appdb.migrate.ledger",
           "appdb.checks.verify", "json")
# The warm-up's connection string (_warm_libpq_crypto): a service nobody defines, and a
# password, so that no password file is read either.
_NEVER_STARTS = b"service=appdb-warm-up-no-such-service host=/nonexistent password=unused"
# Where libpq looks for service files, pointed for the warm-up at files that do not exist.
_SERVICE_FILES = {"PGSERVICEFILE": "/nonexistent/appdb-warm-up/pg_service.conf",
                  "PGSYSCONFDIR": "/nonexistent/appdb-warm-up"}

def preload() -> None:
    """Import what the served commands need, once, before any worker is forked."""
    import ctypes
    import gc
    import importlib

    for module in PRELOAD:
        importlib.import_module(module)
    ctypes.CDLL(None, use_errno=True)
    # The parser holds nothing from the environment (appdb.cli.build_parser): built once here,
    # no worker builds it again.
    importlib.import_module("appdb.cli").build_parser()
    _warm_libpq_crypto()
    # What is loaded now is shared by every worker: kept out of the collector's reach, a
    # collection in a worker does not write to (and so copy) the pages it lives in.
    gc.freeze()


def _warm_libpq_crypto() -> None:
    """Have libpq load OpenSSL's digests once, here, rather than in every worker's connect
    (about 1 ms each: SCRAM's first SHA-256 loads OpenSSL's provider). It hashes a throwaway
    password on a connection that never starts: it names a service, and for that moment the
    service files are ones that do not exist, so libpq gives up before it reads any file or
    opens any socket, whatever PGHOST, PGHOSTADDR or PGSERVICE say (they would win over a host
    given here), and a service file that is a pipe is neither read up nor waited on. Only a
    speed-up: any failure is passed over."""
    saved = {name: os.environ.get(name) for name in _SERVICE_FILES}
    try:
        from psycopg import pq

        os.environ.update(_SERVICE_FILES)
        unopened = pq.PGconn.connect_start(_NEVER_STARTS)
        try:
            unopened.encrypt_password(b"warm-up", b"warm-up", b"scram-sha-256")
        finally:
            unopened.finish()
    except Exception:  # noqa: BLE001 - a libpq without it: workers initialise it themselves
        pass
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def start_server(path: str) -> None:
    """Fork a detached server for ``path``; the caller goes on with its own command."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:  # None: the caller started with that descriptor closed
            stream.flush()
    try:
        if os.fork() != 0:
            return
    except OSError:
        return  # no process to spare (a pids limit): the command runs here, unserved
    status = 0
    try:
        _detach()
        serve(path)
    except BaseException:  # noqa: BLE001 - a server that fails only means slower reverts
        status = 1
    finally:
        os._exit(status)


def _detach() -> None:
    """A session of its own, the root folder, /dev/null for 0-2 and nothing else open:
    a reader of any pipe the caller had (Pulumi's, a shell's) waits for its end, not for us."""
    os.setsid()
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.closerange(3, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 65536)


def serve(path: str, idle: float = IDLE_SECONDS, lifetime: float = MAX_SECONDS) -> None:
    """Listen on ``path`` until ``idle`` seconds pass without a command; one server per path.

    Each command gets a relay process of its own (with its worker, which it reports the status
    of), so the server is at once ready for the next: two stacks reverting from one checkout
    never wait for each other here, only, as ever, for the migration lock. The relay is forked
    before the command comes, and a relay that waits when the server goes leaves with it.
    """
    import fcntl
    import time

    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return  # a kernel older than 5.3: no server, every command on its own
    lock = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(lock).st_ino != os.stat(f"{path}.lock", follow_symlinks=False).st_ino:
            raise OSError("the lock file was replaced: a server that was leaving removed it")
    except OSError:
        os.close(lock)
        return  # another server has this path, or is about to
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    own = identity(os.getpid())
    spare: _Spare | None = None
    try:
        if os.path.lexists(path):
            os.unlink(path)  # left by a server that was killed; we hold the lock
        # Bound under another name and renamed once listening: a caller never finds a socket
        # that refuses it because listen() has not run yet.
        staging = f"{path}.{os.getpid()}"
        if os.path.lexists(staging):
            os.unlink(staging)  # a killed server's, whose pid we now have
        old_mask = os.umask(0o177)
        try:
            listener.bind(staging)
        finally:
            os.umask(old_mask)
        listener.listen(16)
        os.rename(staging, path)
        deadline = time.monotonic() + lifetime
        server_fds = [listener.fileno(), lock]
        while (left := deadline - time.monotonic()) > 0:
            # The next command's relay and worker are forked now, while nobody waits for them.
            spare = spare or _start_relay(server_fds, own)
            listener.settimeout(min(idle, left))
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                break
            taken, spare = spare, None  # whatever happens next, it is this caller's or gone
            with conn:
                _hand_over(conn, taken, server_fds, own)
            _reap()
    finally:
        if spare is not None:
            spare.leave()
        if os.path.lexists(path):
            os.unlink(path)
        listener.close()
        # Still holding the lock: a server that opened this file meanwhile cannot take it and
        # leaves; one that opens after makes a new file. So no lock file is left behind either.
        try:
            os.unlink(f"{path}.lock")
        except FileNotFoundError:
            pass  # its folder was removed under it (a clean-up of /tmp): the relays are still reaped below
        os.close(lock)
        # Relays still at work (a revert longer than the idle time) end with their commands:
        # waited for here, so none is left to a PID 1 that may never reap it.
        _reap(block=True)


def _reap(block: bool = False) -> None:
    """Collect the relays that have finished, so none is left a zombie; ``block``: all of them,
    waiting for those still at work."""
    try:
        while os.waitpid(-1, 0 if block else os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


class _Spare:
    """A relay forked ahead, with its worker, waiting for the next caller: its pid, and the
    channel the server hands it a caller on."""

    def __init__(self, pid: int, channel: socket.socket) -> None:
        self.pid, self.channel = pid, channel

    def leave(self, at_once: bool = False) -> None:
        """Send it away unused, and reap it: closing its channel is its sign to end its worker
        and exit; one that has not within LEAVE_SECONDS (stopped), or at once if a caller
        waits, is killed, and its worker with it (PR_SET_PDEATHSIG)."""
        import select

        self.channel.close()
        try:
            pidfd = os.pidfd_open(self.pid)
        except OSError:
            return
        try:
            if at_once or not select.select([pidfd], [], [], LEAVE_SECONDS)[0]:
                os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except OSError:
            pass
        finally:
            os.close(pidfd)


def _start_relay(server_fds: list[int], own: list[str] | None) -> _Spare | None:
    """Fork a relay, with its worker, to wait for the next caller. None if no process can be
    forked now (the next caller then runs its command on its own)."""
    try:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    except OSError:
        return None  # out of descriptors
    try:
        pid = os.fork()
    except OSError:
        ours.close()
        theirs.close()
        return None
    if pid == 0:
        ours.close()
        relay(theirs, server_fds, own)
    theirs.close()
    return _Spare(pid, ours)


def _hand_over(conn: socket.socket, spare: _Spare | None, server_fds: list[int], own: list[str] | None) -> None:
    """Give an accepted caller to the waiting relay, or to a new one should that one be gone or
    stopped (a stopped relay would hang its caller); then the channel is closed: the relay is
    the caller's now, and the server forks its next one. A relay forked here closes the
    caller's socket too, as it gets its own copy through its channel."""
    for _attempt in range(2):
        if spare is None or not fit_to_serve(spare.pid):
            if spare is not None:
                spare.leave(at_once=True)
            spare = _start_relay([*server_fds, conn.fileno()], own)
            if spare is None:
                return  # the caller sees the socket close without a status, and runs its command itself
        try:
            socket.send_fds(spare.channel, [b"C"], [conn.fileno()])
            spare.channel.close()
            return
        except OSError:
            spare.leave(at_once=True)  # gone since (killed while it waited): another one, once
            spare = None
