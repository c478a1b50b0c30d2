"""A fork server for a chain of reverts: one warm interpreter, a fresh process per command.

Why: removing migrations (a code rollback, or ``pulumi destroy``) makes Pulumi delete one
command resource per migration, newest first, one after the other, and each delete runs
``./bin/appdb revert ID``. Most of such a process is start-up: importing psycopg alone
takes about 100 ms, the revert itself a few. A destroy of 100 migrations spent about
20 s starting Python (issue 20).

How: a revert run with ``--fork-server`` first asks a server for this checkout (a Unix
socket, named for the interpreter, appdb's code and the caller's identity) to run it.
The server forks a relay, which forks a worker that takes over the caller's stdin, stdout
and stderr (passed with SCM_RIGHTS), its environment, folder, umask, signal dispositions
and arguments, and runs :func:`appdb.cli.main` exactly as a new process would (its own
connection, lock and ledger reads); the relay sends the worker's exit status back, and it
becomes the caller's. Without a server the caller runs the command itself, after forking
one: it has just imported what a revert needs and has not yet connected, so the server
starts warm and holds no connection. The server exits after :data:`IDLE_SECONDS` without
a request, and after :data:`MAX_SECONDS` in all.

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
  the size and mtime of every appdb source file, and the environment Python reads at start-up
  (``PYTHON*``, locale), so a changed checkout or setting gets a server of its own.
- Outlive its caller's intent: when the caller dies (Pulumi cancelled), the worker gets
  SIGTERM, then SIGKILL :data:`KILL_AFTER_SECONDS` later; its step rolls back. Ctrl-C in
  the caller is SIGINT to the worker (exit 130, as ever), held until the worker has the
  caller's dispositions so that none is lost. A worker whose relay dies goes too.
- Hold a reader up: the server closes every descriptor it inherited at once; pulumi-command
  waits for the end of its pipes, not for the server.
- Change a result: a server that cannot be reached, or that closes before a status, is
  passed over and the command runs in its own process (a revert is safe to run again:
  it takes the lock and reads the ledger first).

What it does not carry: resource limits and the cgroup are the first caller's, and ``ps``
shows a worker with the first caller's arguments. The server keeps the first caller's
environment (``PGPASSWORD`` included) for its life, as that caller did for its own; like any
process's, ``/proc/PID/environ`` shows it only to the same user and root. Linux only (``SO_PEERCRED``,
``pidfd_open``, ``/proc``); elsewhere every command runs on its own.
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
# After SIGTERM to a worker whose caller died, how long before SIGKILL.
KILL_AFTER_SECONDS = 5.0
# What a revert imports: loaded once in the server, before it forks a worker.
PRELOAD = ("appdb.cli", "appdb.connection", "appdb.redact", "appdb.migrate.runner")
# The lines of /proc/PID/status that say what a process may do: a worker gets the server's.
CREDENTIALS = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp",
               "Seccomp_filters")
# And its namespaces (/proc/PID/ns): a sandbox of the same uid (bwrap, unshare) has its own.
NAMESPACES = ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")

_HEADER = struct.Struct("!I")
_STATUS = struct.Struct("!i")
_MAX_REQUEST = 16 * 1024 * 1024
# sun_path holds 108 bytes on Linux (104 on the BSDs); a longer folder is passed over.
_MAX_SOCKET_PATH = 104
# serve() binds "<path>.<pid>" first: room for it.
_STAGING_SUFFIX = 8
# What the caller sends after its request, while it waits: Ctrl-C.
_INTERRUPT = b"I"
_PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> int:
    """``python -m appdb ARGS``: through a fork server when ARGS ask for one, else directly."""
    # Only `revert` takes the flag: anything else is the CLI's usage error, with no server started.
    if FLAG not in argv or argv[:1] != ["revert"] or not supported():
        from appdb.cli import main as cli_main

        return cli_main(argv)
    path = socket_path()
    if path is not None:
        status = run_via_server(path, argv)
        if status is not None:
            return status
    _preload()
    from appdb.cli import main as cli_main

    # A process that began with 0, 1 or 2 closed has no sys.stdin/stdout/stderr, and a server
    # forked from it would print nothing for any caller: it runs its command on its own.
    if path is not None and _parses(argv) and None not in (sys.stdin, sys.stdout, sys.stderr):
        start_server(path)
    return cli_main(argv)


def _parses(argv: list[str]) -> bool:
    """Whether the arguments are a command at all: a usage error starts no server."""
    import contextlib
    import io

    from appdb.cli import build_parser
    from appdb.errors import ConfigError

    try:  # quietly: --help would print, and the command itself prints it once more
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            build_parser().parse_args(argv)
    except (ConfigError, SystemExit):
        return False
    return True


def supported() -> bool:
    """Peer credentials, fd passing, process fds and /proc: Linux's, all four."""
    return (hasattr(socket, "SO_PEERCRED") and hasattr(socket, "send_fds") and hasattr(os, "pidfd_open")
            and os.path.isdir("/proc/self"))


# --- where the server listens ----------------------------------------------------------


def socket_path() -> str | None:
    """The socket for this interpreter, code and credentials, in a private folder; None if there is none."""
    name = f"{_digest(_server_key())}.sock"
    for folder in _candidate_folders():
        path = os.path.join(folder, name)
        if len(os.fsencode(path)) + _STAGING_SUFFIX < _MAX_SOCKET_PATH and _private(folder):
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
    """Usable only in a parent where nobody else can rename it (ours or root's, and sticky if
    others may write), checked before anything is made there; then made 0700 if missing, and
    used only if it is a real folder (not a link), ours, and closed to others."""
    uid = os.getuid()
    try:
        parent = os.stat(os.path.dirname(folder))
    except OSError:
        return False
    shared = parent.st_mode & 0o022 and not parent.st_mode & stat.S_ISVTX
    if parent.st_uid not in (uid, 0) or shared:
        return False
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
    return stat.S_ISDIR(info.st_mode) and info.st_uid == uid and not info.st_mode & 0o077


def _server_key() -> str:
    """What a worker inherits from its server and a caller must share: interpreter, its flags and
    module path (``python -m`` puts the folder it ran in there), code, identity (credentials,
    namespaces, root, label), and the environment Python reads only at start-up."""
    startup = sorted(f"{key}={value}" for key, value in os.environ.items()
                     if key.startswith("PYTHON") or key.startswith("LC_") or key == "LANG")
    return "\0".join([sys.executable, repr(sys.flags), repr(sys.path), _code_stamp(),
                      *(identity(os.getpid()) or ["unknown"]), *startup])


def identity(pid: int) -> list[str] | None:
    """What a worker takes from its server rather than its caller, for process ``pid``: uids,
    gids, groups, capabilities, no_new_privs, seccomp (and how many filters), namespaces, root
    folder and security label. None when /proc will not say (then nobody is served)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            lines = [line for line in status.read().splitlines() if line.split(":", 1)[0] in CREDENTIALS]
        lines += [f"ns/{name}: {os.readlink(f'/proc/{pid}/ns/{name}')}" for name in NAMESPACES
                  if os.path.lexists(f"/proc/{pid}/ns/{name}")]
        root = os.stat(f"/proc/{pid}/root")
    except OSError:
        return None
    lines.append(f"root: {root.st_dev}:{root.st_ino}")
    try:
        with open(f"/proc/{pid}/attr/current", "rb") as label:
            lines.append(f"label: {label.read()!r}")
    except OSError:
        lines.append("label: none")  # no security module that keeps one
    return lines


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


def _peer(sock: socket.socket) -> tuple[int, int, int]:
    """pid, uid and gid of the process at the other end (Linux's SO_PEERCRED)."""
    size = struct.calcsize("3i")
    return struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, size))


# --- the caller's side -------------------------------------------------------------------


def run_via_server(path: str, argv: list[str]) -> int | None:
    """The command's exit status from the server; None when no server ran it."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    interrupted = False
    reply = None
    try:
        client.connect(path)
        server_pid, server_uid, _gid = _peer(client)
        own = identity(os.getpid())
        if server_uid != os.getuid() or own is None or identity(server_pid) != own:
            return None  # not a server like us (another user's, a folder swapped under us): send nothing
        body = encode_request(argv)
        socket.send_fds(client, [_HEADER.pack(len(body))], [0, 1, 2])
        client.sendall(body)
        while True:
            try:
                reply = _receive_exactly(client, _STATUS.size)
                break
            except KeyboardInterrupt:
                # Ctrl-C: the worker gets SIGINT and answers it as a process of its own would.
                interrupted = True
                client.sendall(_INTERRUPT)
    except OSError:
        reply = None
    except KeyboardInterrupt:
        interrupted = True  # before the request was out, or while passing one on: closing stops the worker
    finally:
        client.close()
    if reply is None:
        # Interrupted, the command must not start again here: the one-line answer to Ctrl-C.
        return _interrupted() if interrupted else None
    return _STATUS.unpack(reply)[0]


def _interrupted() -> int:
    """The CLI's own answer to Ctrl-C (appdb.cli.main), where the CLI itself never ran."""
    from appdb.errors import INTERRUPTED, INTERRUPTED_EXIT

    print(f"appdb: error: {INTERRUPTED}", file=sys.stderr)
    return INTERRUPTED_EXIT


def _receive_exactly(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


class Request:
    """What a process of its own would have had: folder, umask, signals, arguments and environment."""

    __slots__ = ("cwd", "umask", "ignored", "blocked", "argv", "env")

    def __init__(self, cwd: bytes, umask: int, ignored: set[int], blocked: set[int],
                 argv: list[bytes], env: dict[bytes, bytes]) -> None:
        self.cwd, self.umask, self.ignored, self.blocked = cwd, umask, ignored, blocked
        self.argv, self.env = argv, env


def encode_request(argv: list[str]) -> bytes:
    """NUL-separated bytes, as the kernel hands a process its arguments and environment (none
    holds a NUL): ``2``, folder, umask, ignored signals, blocked signals, argument count, the
    arguments, then ``KEY=VALUE`` for each variable."""
    umask = os.umask(0o022)
    os.umask(umask)
    ignored, blocked = _signal_state()
    fields = [b"2", os.getcwdb(), b"%d" % umask, _numbers(ignored), _numbers(blocked), b"%d" % len(argv),
              *map(os.fsencode, argv)]
    fields += [key + b"=" + value for key, value in os.environb.items()]
    return b"\0".join(fields)


def decode_request(body: bytes) -> Request | None:
    """The request, or None when the bytes are not one of ours."""
    fields = body.split(b"\0")
    try:
        version, cwd, umask, count = fields[0], fields[1], int(fields[2]), int(fields[5])
        ignored, blocked = _parse_numbers(fields[3]), _parse_numbers(fields[4])
    except (IndexError, ValueError):
        return None
    if version != b"2" or not 0 <= count <= len(fields) - 6 or not 0 <= umask <= 0o777:
        return None
    argv = fields[6:6 + count]
    env = dict(entry.partition(b"=")[::2] for entry in fields[6 + count:] if entry.find(b"=") > 0)
    return Request(cwd, umask, ignored, blocked, argv, env)


def _signal_state() -> tuple[set[int], set[int]]:
    """The signals this process ignores and blocks: a process of its own would have inherited them."""
    import signal

    ignored = {int(sig) for sig in signal.valid_signals()
               if sig not in (signal.SIGKILL, signal.SIGSTOP) and signal.getsignal(sig) is signal.SIG_IGN}
    blocked = {int(sig) for sig in signal.pthread_sigmask(signal.SIG_BLOCK, [])}
    return ignored, blocked


def _numbers(values: set[int]) -> bytes:
    return b",".join(b"%d" % value for value in sorted(values))


def _parse_numbers(field: bytes) -> set[int]:
    return {int(value) for value in field.split(b",")} if field else set()


# --- the server --------------------------------------------------------------------------


def _preload() -> None:
    import ctypes
    import gc
    import importlib
    import signal  # noqa: F401 - the worker sets dispositions

    for module in PRELOAD:
        importlib.import_module(module)
    ctypes.CDLL(None, use_errno=True)
    # The parser holds nothing from the environment (appdb.cli.build_parser): built once here,
    # no worker builds it again.
    importlib.import_module("appdb.cli").build_parser()
    # What is loaded now is shared by every worker: kept out of the collector's reach, a
    # collection in a worker does not write to (and so copy) the pages it lives in.
    gc.freeze()


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
        if os.fstat(lock).st_ino != os.stat(f"{path}.lock", follow_symlinks=False).st_ino:
            raise OSError("the lock file was replaced: a server that was leaving removed it")
    except OSError:
        os.close(lock)
        return  # another server has this path, or is about to
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    own = identity(os.getpid())
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
        while (left := deadline - time.monotonic()) > 0:
            listener.settimeout(min(idle, left))
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                break
            with conn:
                if os.fork() == 0:
                    _relay(conn, [listener.fileno(), lock], own)
            _reap()
    finally:
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


def _relay(conn: socket.socket, server_fds: list[int], own: list[str] | None) -> None:
    """In the relay: check the caller, fork its worker, send back the worker's status; then exit."""
    try:
        for fd in server_fds:
            os.close(fd)  # the listener, and the lock: a new server may start while we work
        conn.settimeout(None)
        _serve_one(conn, own)
    except BaseException:  # noqa: BLE001 - the caller, seeing no status, runs the command itself
        pass
    finally:
        os._exit(0)


def _serve_one(conn: socket.socket, own: list[str] | None) -> None:
    import signal

    pid, uid, _gid = _peer(conn)
    if uid != os.getuid() or own is None or identity(pid) != own:
        return  # another user, or the same one with other groups, capabilities, namespaces...
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
        relay = os.getpid()
        # Signals stay pending in the worker until it has the caller's dispositions: a Ctrl-C
        # passed on at once is neither lost in the fork nor taken by the server's handlers.
        mask = signal.pthread_sigmask(signal.SIG_SETMASK, signal.valid_signals())
        worker = os.fork()
        if worker == 0:
            _work(request, fds, conn, relay)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        status = _wait(worker, conn)
    finally:
        for fd in fds:
            os.close(fd)
    conn.sendall(_STATUS.pack(status))


def _wait(pid: int, conn: socket.socket) -> int:
    """The worker's exit status. The caller's Ctrl-C is SIGINT to the worker; the caller gone
    (killed) is SIGTERM, and SIGKILL if the worker is still there after KILL_AFTER_SECONDS."""
    import select
    import signal

    pidfd = os.pidfd_open(pid)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        poller.register(conn, select.POLLIN | select.POLLHUP)
        timeout = None
        while True:
            ready = {fd for fd, _event in poller.poll(timeout)}
            if pidfd in ready:
                break
            if not ready:  # the grace after SIGTERM is over
                os.kill(pid, signal.SIGKILL)
                timeout = None
                continue
            data = conn.recv(1)
            if data == _INTERRUPT:
                os.kill(pid, signal.SIGINT)
                continue
            os.kill(pid, signal.SIGTERM)
            poller.unregister(conn)
            timeout = int(KILL_AFTER_SECONDS * 1000)
    finally:
        os.close(pidfd)
    _, wait_status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(wait_status)
    return code if code >= 0 else 128 - code


def _work(request: Request, fds: list[int], conn: socket.socket, relay: int) -> None:
    """In the worker: become the caller's process, run the command, exit with its status."""
    status = 1
    try:
        _die_with(relay)
        conn.close()
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
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    except KeyboardInterrupt:  # Ctrl-C before the command began: what `appdb` says to one
        status = _interrupted()
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


def _die_with(relay: int) -> None:
    """SIGKILL when the relay dies (the OOM killer, a stray kill): nobody would report our status."""
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != relay:
        os._exit(1)  # it died before the line above


def _take_signals(ignored: set[int], blocked: set[int]) -> None:
    """The caller's dispositions, as a process of its own would inherit them: what it ignores is
    ignored, the rest default, SIGINT to Python's KeyboardInterrupt; and its signal mask."""
    import signal

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
