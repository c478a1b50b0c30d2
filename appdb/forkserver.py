"""A fork server for a chain of reverts: one warm interpreter, a fresh process per command.

Why: removing migrations (a code rollback, or ``pulumi destroy``) makes Pulumi delete one
command resource per migration, newest first, one after the other, and each delete runs
``./bin/appdb revert ID``. Most of such a process is start-up: importing psycopg alone
takes about 100 ms, the revert itself a few. A destroy of 100 migrations spent about
20 s starting Python (issue 20).

How: a revert run with ``--fork-server`` first asks a server for this checkout (a Unix
socket, named for the interpreter and appdb's code) to run it. The server forks a
worker that takes over the caller's stdin, stdout and stderr (passed with SCM_RIGHTS),
its environment, folder and arguments, and runs :func:`appdb.cli.main` exactly as a new
process would (its own connection, lock and ledger reads); the worker's exit status
becomes the caller's. Without a server the caller runs the command itself, after forking
one: it has just imported what a revert needs and has not yet connected, so the server
starts warm and holds no connection. The server exits after :data:`IDLE_SECONDS` without
a request, and after :data:`MAX_SECONDS` in all.

What it must never do, and how it does not:

- Serve another OS user: the socket lives in a folder only its owner can enter (refused,
  and the command runs the slow way, when the folder is anyone else's or open), and the
  server checks the peer's uid (``SO_PEERCRED``) on every connection.
- Run stale code: the socket's name covers the interpreter and the size and mtime of
  every appdb source file, so a changed checkout gets a server of its own.
- Outlive its caller's intent: when the caller dies (Pulumi cancelled), the worker gets
  SIGTERM, as a process of its own would; its step rolls back.
- Hold Pulumi up: the server closes the pipes it inherited at once; pulumi-command
  waits for their end-of-file, not for the server.
- Change a result: a server that cannot be reached, or that closes before a status, is
  passed over and the command runs in its own process (a revert is safe to run again:
  it takes the lock and reads the ledger first).

Linux only (``SO_PEERCRED``, ``pidfd_open``); elsewhere every command runs on its own.
"""

from __future__ import annotations

import os
import socket
import stat
import struct
import sys

# The flag that asks for a fork server; `revert` accepts it (components/migrations.py sets it).
FLAG = "--fork-server"
# How long the server waits for the next command: Pulumi's deletes follow one another
# within milliseconds, but a busy CI machine can take seconds between two.
IDLE_SECONDS = 10.0
# A server never lives longer than this, however busy.
MAX_SECONDS = 600.0
# What a revert imports: loaded once in the server, before it forks a worker.
PRELOAD = ("appdb.cli", "appdb.connection", "appdb.redact", "appdb.migrate.runner")

_HEADER = struct.Struct("!I")
_STATUS = struct.Struct("!i")
_MAX_REQUEST = 16 * 1024 * 1024
# sun_path holds 108 bytes on Linux (104 on the BSDs); a longer folder is passed over.
_MAX_SOCKET_PATH = 104


def main(argv: list[str]) -> int:
    """``python -m appdb ARGS``: through a fork server when ARGS ask for one, else directly."""
    if FLAG not in argv or not supported():
        from appdb.cli import main as cli_main

        return cli_main(argv)
    path = socket_path()
    if path is not None:
        status = run_via_server(path, argv)
        if status is not None:
            return status
    _preload()
    if path is not None:
        start_server(path)
    from appdb.cli import main as cli_main

    return cli_main(argv)


def supported() -> bool:
    """Peer credentials, fd passing and process fds: Linux's, all three."""
    return hasattr(socket, "SO_PEERCRED") and hasattr(socket, "send_fds") and hasattr(os, "pidfd_open")


# --- where the server listens ----------------------------------------------------------


def socket_path() -> str | None:
    """The socket for this interpreter and this code, in a private folder; None if there is none."""
    name = f"{_digest(f'{sys.executable}{chr(0)}{_code_stamp()}')}.sock"
    for folder in _candidate_folders():
        path = os.path.join(folder, name)
        if len(os.fsencode(path)) < _MAX_SOCKET_PATH and _private(folder):
            return path
    return None


def private_folder() -> str | None:
    """The first private folder: ``$XDG_RUNTIME_DIR/appdb``, else ``/tmp/appdb-UID``."""
    return next((folder for folder in _candidate_folders() if _private(folder)), None)


def _candidate_folders() -> list[str]:
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    own = [os.path.join(runtime, "appdb")] if os.path.isabs(runtime) else []
    return [*own, f"/tmp/appdb-{os.getuid()}"]


def _private(folder: str) -> bool:
    """Made 0700 if missing; usable only if it is a real folder (not a link), ours, and closed to others."""
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return False
    try:
        info = os.lstat(folder)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o077


def _code_stamp() -> str:
    """The path, size and mtime of every appdb source file: any edit changes it."""
    root = os.path.dirname(os.path.realpath(__file__))
    parts = [root]
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith((".py", ".sql")):
                info = os.stat(os.path.join(folder, name))
                parts.append(f"{folder}/{name}:{info.st_size}:{info.st_mtime_ns}")
    return "\n".join(parts)


def _digest(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:32]


# --- the caller's side -------------------------------------------------------------------


def run_via_server(path: str, argv: list[str]) -> int | None:
    """The command's exit status from the server; None when no server ran it."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(path)
        # ASCII JSON keeps what os.environ holds undecodable (lone surrogates) intact.
        body = encode_request(argv)
        socket.send_fds(client, [_HEADER.pack(len(body))], [0, 1, 2])
        client.sendall(body)
        reply = _receive_exactly(client, _STATUS.size)
    except OSError:
        return None
    finally:
        client.close()
    return None if reply is None else _STATUS.unpack(reply)[0]


def _receive_exactly(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


class Request:
    """What a process of its own would have had: its folder, umask, arguments and environment, as bytes."""

    __slots__ = ("cwd", "umask", "argv", "env")

    def __init__(self, cwd: bytes, umask: int, argv: list[bytes], env: dict[bytes, bytes]) -> None:
        self.cwd, self.umask, self.argv, self.env = cwd, umask, argv, env


def encode_request(argv: list[str]) -> bytes:
    """NUL-separated bytes, as the kernel hands a process its arguments and environment (none holds a NUL):
    ``1``, folder, umask, argument count, the arguments, then ``KEY=VALUE`` for each variable."""
    umask = os.umask(0o022)
    os.umask(umask)
    fields = [b"1", os.getcwdb(), b"%d" % umask, b"%d" % len(argv), *map(os.fsencode, argv)]
    fields += [key + b"=" + value for key, value in os.environb.items()]
    return b"\0".join(fields)


def decode_request(body: bytes) -> Request | None:
    """The request, or None when the bytes are not one of ours."""
    fields = body.split(b"\0")
    try:
        version, cwd, umask, count = fields[0], fields[1], int(fields[2]), int(fields[3])
    except (IndexError, ValueError):
        return None
    if version != b"1" or not 0 <= count <= len(fields) - 4 or not 0 <= umask <= 0o777:
        return None
    argv = fields[4:4 + count]
    env = dict(entry.partition(b"=")[::2] for entry in fields[4 + count:] if entry.find(b"=") > 0)
    return Request(cwd, umask, argv, env)


# --- the server --------------------------------------------------------------------------


def _preload() -> None:
    import gc
    import importlib

    for module in PRELOAD:
        importlib.import_module(module)
    # What is loaded now is shared by every worker: kept out of the collector's reach, a
    # collection in a worker does not write to (and so copy) the pages it lives in.
    gc.freeze()


def start_server(path: str) -> None:
    """Fork a detached server for ``path``; the caller goes on with its own command."""
    sys.stdout.flush()
    sys.stderr.flush()
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
    """A session of its own, and /dev/null for the pipes it inherited: Pulumi waits for their end."""
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def serve(path: str, idle: float = IDLE_SECONDS, lifetime: float = MAX_SECONDS) -> None:
    """Listen on ``path`` until ``idle`` seconds pass without a command; one server per path.

    Each command gets a relay process of its own (which forks the worker and reports its
    status), so the server is at once ready for the next: two stacks reverting from one
    checkout never wait for each other here, only, as ever, for the migration lock.
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
    except OSError:
        os.close(lock)
        return  # another server has this path
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if os.path.lexists(path):
            os.unlink(path)  # left by a server that was killed; we hold the lock
        old_mask = os.umask(0o177)
        try:
            listener.bind(path)
        finally:
            os.umask(old_mask)
        listener.listen(16)
        deadline = time.monotonic() + lifetime
        while (left := deadline - time.monotonic()) > 0:
            listener.settimeout(min(idle, left))
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                break
            with conn:
                if os.fork() == 0:
                    _relay(conn, listener)
            _reap()
    finally:
        if os.path.lexists(path):
            os.unlink(path)
        listener.close()
        os.close(lock)


def _reap() -> None:
    """Collect the relays that have finished, so none is left a zombie."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def _relay(conn: socket.socket, listener: socket.socket) -> None:
    """In the relay: check the caller, fork its worker, send back the worker's status; then exit."""
    try:
        listener.close()
        conn.settimeout(None)
        _serve_one(conn)
    except BaseException:  # noqa: BLE001 - the caller, seeing no status, runs the command itself
        pass
    finally:
        os._exit(0)


def _serve_one(conn: socket.socket) -> None:
    peer = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    if peer[1] != os.getuid():
        return
    fds: list[int] = []
    try:
        header, fds, _flags, _addr = socket.recv_fds(conn, _HEADER.size, 3)
        if len(header) != _HEADER.size or len(fds) != 3:
            return
        (size,) = _HEADER.unpack(header)
        body = _receive_exactly(conn, size) if size <= _MAX_REQUEST else None
        request = decode_request(body) if body is not None else None
        if request is None:
            return
        pid = os.fork()
        if pid == 0:
            _work(request, fds, conn)
        status = _wait(pid, conn)
    finally:
        for fd in fds:
            os.close(fd)
    conn.sendall(_STATUS.pack(status))


def _wait(pid: int, conn: socket.socket) -> int:
    """The worker's exit status; SIGTERM to it if the caller goes away first, as to a process of its own."""
    import select
    import signal

    pidfd = os.pidfd_open(pid)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        poller.register(conn, select.POLLIN | select.POLLHUP)
        while True:
            ready = {fd for fd, _event in poller.poll()}
            if pidfd in ready:
                break
            if conn.fileno() in ready:
                os.kill(pid, signal.SIGTERM)
                poller.unregister(conn)
    finally:
        os.close(pidfd)
    _, wait_status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(wait_status)
    return code if code >= 0 else 128 - code


def _work(request: Request, fds: list[int], conn: socket.socket) -> None:
    """In the worker: become the caller's process, run the command, exit with its status."""
    status = 1
    try:
        conn.close()
        for target, fd in zip((0, 1, 2), fds):
            os.dup2(fd, target)
        for fd in fds:
            os.close(fd)
        os.chdir(request.cwd)
        os.umask(request.umask)
        os.environ.clear()
        os.environb.update(request.env)
        argv = [os.fsdecode(arg) for arg in request.argv]
        sys.argv = [sys.argv[0], *argv]
        from appdb.cli import main as cli_main

        status = cli_main(argv)
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - what a process of its own would print
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(status)
