"""The server's side: one warm interpreter that forks a fresh process for each command.

:func:`start_server` forks a detached server from a caller that found none (it has just
imported what a revert needs and has not yet connected, so the server starts warm and holds
no connection). :func:`serve` accepts callers on the socket and hands each to a relay process,
forked ahead with its worker (two forks of a large process are not in a revert's time), which
checks who is calling, passes the command to the worker and sends back its exit status; the
worker becomes the caller's process (its stdin, stdout and stderr, environment, folder, umask, signal
dispositions and arguments) and runs :func:`appdb.cli.main` exactly as a new process would.
The package's docstring says what a server must never do, and how it does not.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from typing import NoReturn

from appdb.forkserver.caller import interrupted_status
from appdb.forkserver.identity import identity, peer
from appdb.forkserver.protocol import (
    HEADER,
    INTERRUPT,
    MAX_REQUEST,
    STATUS,
    Request,
    decode_request,
    read_exactly,
    receive_exactly,
)

# How long the server waits for the next command: Pulumi's deletes follow one another
# within milliseconds, but a busy CI machine can take seconds between two.
IDLE_SECONDS = 10.0
# A server never lives longer than this, however busy.
MAX_SECONDS = 600.0
# After SIGTERM to a worker whose caller died, how long before SIGKILL.
KILL_AFTER_SECONDS = 5.0
# What a revert imports: loaded once in the server, before it forks a worker.
PRELOAD = ("appdb.cli", "appdb.connection", "appdb.redact", "appdb.migrate.runner")
_PR_SET_PDEATHSIG = 1
# Every signal, made once: a worker holds them all before it reports (_report_and_exit).
_EVERY_SIGNAL = frozenset(signal.valid_signals())
# The warm-up's connection string (_warm_libpq_crypto): a service nobody defines, and a
# password, so that no password file is read either.
_NEVER_STARTS = b"service=appdb-warm-up-no-such-service host=/nonexistent password=unused"
# Where libpq looks for service files, pointed for the warm-up at files that do not exist.
_SERVICE_FILES = {"PGSERVICEFILE": "/nonexistent/appdb-warm-up/pg_service.conf",
                  "PGSYSCONFDIR": "/nonexistent/appdb-warm-up"}
# Python's own exit status when it cannot flush stdout or stderr at the end (a closed pipe).
_FLUSH_FAILED = 120


def preload() -> None:
    """Import what a revert needs, once, before any worker is forked."""
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
    if os.fork() != 0:
        return
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
    spare: socket.socket | None = None
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
            with conn:
                _hand_over(conn, spare, server_fds, own)
            spare = None  # taken, or gone
            _reap()
    finally:
        if spare is not None:
            spare.close()  # an idle relay sees the end of its channel and leaves, its worker with it
        if os.path.lexists(path):
            os.unlink(path)
        listener.close()
        # Still holding the lock: a server that opened this file meanwhile cannot take it and
        # leaves; one that opens after makes a new file. So no lock file is left behind either.
        os.unlink(f"{path}.lock")
        os.close(lock)


def _reap() -> None:
    """Collect the relays that have finished, so none is left a zombie."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def _start_relay(server_fds: list[int], own: list[str] | None) -> socket.socket | None:
    """Fork a relay, with its worker, to wait for the next caller; the channel that hands it one.
    None if no process can be forked now (the next caller then runs its command on its own)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        pid = os.fork()
    except OSError:
        ours.close()
        theirs.close()
        return None
    if pid == 0:
        ours.close()
        _relay(theirs, server_fds, own)
    theirs.close()
    return ours


def _hand_over(conn: socket.socket, spare: socket.socket | None, server_fds: list[int],
               own: list[str] | None) -> None:
    """Give an accepted caller to the waiting relay (to a new one should that one be gone), and
    close the channel: the relay is the caller's now, and the server forks its next one."""
    for _attempt in range(2):
        if spare is None:
            spare = _start_relay(server_fds, own)
            if spare is None:
                return  # the caller sees the socket close without a status, and runs its command itself
        try:
            socket.send_fds(spare, [b"C"], [conn.fileno()])
            return
        except OSError:
            pass  # that relay is gone (killed while it waited): another one, once
        finally:
            spare.close()
            spare = None


def _relay(channel: socket.socket, server_fds: list[int], own: list[str] | None) -> NoReturn:
    """In a relay: fork the worker, wait for a caller, check it, pass its command to the worker
    and send back the worker's status; then exit. Forked ahead of its caller, with its worker,
    so that neither fork is in a revert's time (about 2.5 ms a revert, issue 20)."""
    try:
        for fd in server_fds:
            os.close(fd)  # the listener, and the lock: a new server may start while we work
        worker = _start_worker([channel])
        conn = _receive_caller(channel)
        channel.close()
        if conn is not None:
            _serve_one(conn, own, worker)
    except BaseException:  # noqa: BLE001 - the caller, seeing no status, runs the command itself
        pass
    finally:
        os._exit(0)  # a worker still waiting sees its channel end, and leaves too


def _receive_caller(channel: socket.socket) -> socket.socket | None:
    """The caller's connection, from the server; None when the server has closed the channel."""
    _data, fds, _flags, _addr = socket.recv_fds(channel, 1, 1)
    if len(fds) != 1:
        for fd in fds:
            os.close(fd)
        return None
    conn = socket.socket(fileno=fds[0])
    conn.setblocking(True)  # the listener's timeout is not the caller's: a revert takes what it takes
    return conn


class _Worker:
    """A worker forked ahead of its command: its pid, the channel its command goes down, and
    the pipe it writes its exit status to (see _report_and_exit)."""

    def __init__(self, pid: int, channel: socket.socket, report: int) -> None:
        self.pid, self.channel, self.report = pid, channel, report


def _start_worker(inherited: list[socket.socket]) -> _Worker:
    """Fork the worker, every signal held: one that comes before the worker has its caller's
    dispositions stays pending until then, neither lost nor taken by the server's handlers.
    ``inherited``: the relay's sockets, which the worker closes."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    # The worker writes its status here just before it exits: the caller has it without
    # waiting for the kernel to tear a large process down (about 1.5 ms a revert).
    report, report_end = os.pipe()
    relay = os.getpid()
    mask = signal.pthread_sigmask(signal.SIG_SETMASK, signal.valid_signals())
    pid = os.fork()
    if pid == 0:
        _worker_process(theirs, [ours, *inherited], relay, report, report_end)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    theirs.close()
    os.close(report_end)
    return _Worker(pid, ours, report)


def _serve_one(conn: socket.socket, own: list[str] | None, worker: _Worker) -> None:
    pid, uid, _gid = peer(conn)
    if uid != os.getuid() or own is None or identity(pid) != own:
        return  # another user, or the same one with other groups, capabilities, namespaces...
    if not _ready(worker.pid):  # signalled while it waited: it would die at its command's first step
        worker = _replace(worker, conn)
    received = _receive_request(conn)
    if received is None:
        return
    body, fds = received
    try:
        _send_request(worker.channel, body, fds)
    finally:
        for fd in fds:
            os.close(fd)
    worker.channel.close()
    status, exited = _wait(worker.pid, conn, worker.report)
    try:
        conn.sendall(STATUS.pack(status))
    finally:
        if not exited:
            os.waitpid(worker.pid, 0)  # it has reported and is leaving: reaped here, whatever the caller did


def _replace(worker: _Worker, conn: socket.socket) -> _Worker:
    """A new worker for one that cannot serve, which is killed and reaped."""
    os.kill(worker.pid, signal.SIGKILL)
    os.waitpid(worker.pid, 0)
    worker.channel.close()
    os.close(worker.report)
    return _start_worker([conn])


def _receive_request(sock: socket.socket) -> tuple[bytes, list[int]] | None:
    """A command as a caller sends it: its body (checked) and its stdin, stdout and stderr.
    None, with nothing left open, for anything else."""
    fds: list[int] = []
    try:
        header, fds, _flags, _addr = socket.recv_fds(sock, HEADER.size, 3)
        if len(header) == HEADER.size and len(fds) == 3:
            (size,) = HEADER.unpack(header)
            body = receive_exactly(sock, size) if size <= MAX_REQUEST else None
            if body is not None and decode_request(body) is not None:
                return body, fds
    except OSError:
        pass
    for fd in fds:
        os.close(fd)
    return None


def _send_request(sock: socket.socket, body: bytes, fds: list[int]) -> None:
    """Pass a command on to the worker, in the caller's own framing."""
    socket.send_fds(sock, [HEADER.pack(len(body))], fds)
    sock.sendall(body)


def _ready(pid: int) -> bool:
    """Whether a waiting worker has no signal pending (``/proc``): all are held while it waits,
    so one sent to it then (``pkill``) would strike once it has the caller's dispositions."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            pending = [line.split(":", 1)[1].strip() for line in status
                       if line.startswith(("SigPnd:", "ShdPnd:"))]
    except OSError:
        return False
    return len(pending) == 2 and all(int(mask, 16) == 0 for mask in pending)


def _wait(pid: int, conn: socket.socket, report: int) -> tuple[int, bool]:
    """The worker's exit status, and whether it has exited yet (it may report just before).
    The caller's Ctrl-C is SIGINT to the worker; the caller gone (killed) is SIGTERM, and
    SIGKILL if the worker is still there after KILL_AFTER_SECONDS."""
    import select

    pidfd = os.pidfd_open(pid)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        poller.register(report, select.POLLIN)
        poller.register(conn, select.POLLIN | select.POLLHUP)
        timeout = None
        while True:
            ready = {fd for fd, _event in poller.poll(timeout)}
            if report in ready:
                reported = _receive_report(report)
                if reported is not None:
                    return reported, False
                poller.unregister(report)  # closed unsaid: it died, and pidfd tells how
            if pidfd in ready:
                break
            if not ready:  # the grace after SIGTERM is over
                os.kill(pid, signal.SIGKILL)
                timeout = None
                continue
            if conn.fileno() not in ready:
                continue
            data = conn.recv(1)
            if data == INTERRUPT:
                os.kill(pid, signal.SIGINT)
                continue
            os.kill(pid, signal.SIGTERM)
            poller.unregister(conn)
            timeout = int(KILL_AFTER_SECONDS * 1000)
    finally:
        os.close(pidfd)
        os.close(report)
    _, wait_status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(wait_status)
    return (code if code >= 0 else 128 - code), True


def _receive_report(report: int) -> int | None:
    """The status a worker wrote before exiting; None if it closed the pipe without one."""
    data = read_exactly(lambda size: os.read(report, size), STATUS.size)
    return STATUS.unpack(data)[0] if data is not None else None


def _worker_process(channel: socket.socket, relay_fds: list[socket.socket], relay: int, report_read: int,
                    report: int) -> NoReturn:
    """The worker's whole life, which never returns into the relay's code it was forked from
    (that code's exit is 0: a failed revert would reach Pulumi as done). It waits for its
    command; should anything escape :func:`_work`, a Ctrl-C in the instant before its signals
    are held, the worker exits 130 (what a process of its own says to one), or 1, with no
    report: the relay takes that status. A relay that leaves with no command for it (its server
    closed) ends it too: exit 0, nobody waits for it."""
    code = 1
    try:
        for sock in relay_fds:
            sock.close()
        os.close(report_read)
        _die_with(relay)
        received = _receive_request(channel)
        channel.close()
        if received is None:
            code = 0
            return
        body, fds = received
        request = decode_request(body)
        assert request is not None  # the relay checked it
        _work(request, fds, relay, report)
    except KeyboardInterrupt:
        code = 130
        _hold_signals()
        _flush()  # what the command printed still reaches its reader, as at a process's own end
    finally:
        os._exit(code)


def _work(request: Request, fds: list[int], relay: int, report: int) -> None:
    """In the worker: become the caller's process, run the command, report and exit with its status."""
    status = 1
    try:
        for target, fd in zip((0, 1, 2), fds):
            os.dup2(fd, target)
        for fd in fds:
            os.close(fd)
        _take_signals(request.ignored, request.blocked)
        os.chdir(request.cwd)
        os.umask(request.umask)
        os.environ.clear()
        os.environb.update(request.env)
        argv = [os.fsdecode(arg) for arg in request.argv]
        sys.argv = [sys.argv[0], *argv]
        from appdb.cli import main as cli_main

        status = cli_main(argv)
    except SystemExit as exc:  # as Python itself ends a process on one
        if exc.code is None or isinstance(exc.code, int):
            status = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            status = 1
    except KeyboardInterrupt:  # Ctrl-C before the command began: what `appdb` says to one
        status = interrupted_status()
    except BaseException:  # noqa: BLE001 - what a process of its own would print
        import traceback

        traceback.print_exc()
    finally:
        _report_and_exit(status, report)


def _report_and_exit(status: int, report: int) -> NoReturn:
    """Flush, let go of the caller's descriptors (its readers, Pulumi's pipes, see their end),
    tell the relay the status ``os._exit`` gives, and exit. Signals are held first of all, with
    a set made in advance (building one takes Python code a Ctrl-C could interrupt): the command
    is over, and a late Ctrl-C must not skip the report or the exit."""
    _hold_signals()
    code = status & 0xFF  # what the exit status would be
    if not _flush():
        code = _FLUSH_FAILED
    try:
        for fd in (0, 1, 2):
            os.close(fd)
        os.write(report, STATUS.pack(code))
    except OSError:
        pass  # the relay reads the status from the exit instead
    os._exit(code)


def _hold_signals() -> None:
    """Block every signal. Python runs a handler already due when the mask changes, so a Ctrl-C
    on its way may still raise here, once: the mask is set by then, and setting it again ends it."""
    while True:
        try:
            signal.pthread_sigmask(signal.SIG_BLOCK, _EVERY_SIGNAL)
            return
        except KeyboardInterrupt:
            continue


def _flush() -> bool:
    """Flush stdout and stderr; False if either could not be written (a closed pipe)."""
    flushed = True
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed pipe: nothing more can be said on it
            flushed = False
    return flushed


def _die_with(relay: int) -> None:
    """SIGKILL when the relay dies (the OOM killer, a stray kill): nobody would report our status."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != relay:
        os._exit(1)  # it died before the line above


def _take_signals(ignored: set[int], blocked: set[int]) -> None:
    """The caller's dispositions, as a process of its own would inherit them: what it ignores is
    ignored, the rest default, SIGINT to Python's KeyboardInterrupt; and its signal mask."""
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        wanted = signal.SIG_IGN if int(sig) in ignored else signal.SIG_DFL
        if sig == signal.SIGINT and wanted is signal.SIG_DFL:
            wanted = signal.default_int_handler
        try:
            signal.signal(sig, wanted)
        except (OSError, ValueError):
            pass  # a signal the platform will not let Python set
    signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
