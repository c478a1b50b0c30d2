"""Who a process is, as far as a worker is concerned: what it takes from its server, not its caller.

A worker runs with the server's groups, capabilities, seccomp filters, namespaces, root folder
and security label, so a server serves only a caller whose are the same, and a caller sends
only to such a server. Both ask here, and both sides import it: it uses builtins only, so the
caller's start-up stays Python's own.
"""

from __future__ import annotations

import os
import struct

# The lines of /proc/PID/status that say what a process may do: a worker gets the server's.
CREDENTIALS = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp",
               "Seccomp_filters")
# And its namespaces (/proc/PID/ns): a sandbox of the same uid (bwrap, unshare) has its own.
NAMESPACES = ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")
# SO_PEERCRED's answer: pid, uid and gid, three C ints.
_PEERCRED = struct.Struct("3i")


def identity(pid: int, running: bool = False) -> list[str] | None:
    """What a worker takes from its server rather than its caller, for process ``pid``: uids,
    gids, groups, capabilities, no_new_privs, seccomp (and how many filters), namespaces, root
    folder and security label. None when /proc will not say (then nobody is served), and, with
    ``running``, when the process is stopped or gone: a caller sends nothing to a server that is
    (``kill -STOP``, a debugger, a frozen cgroup), which would hold its command for ever."""
    status = _status(pid)
    if status is None or (running and not _live(status)):
        return None
    lines = [f"{key}: {status[key]}" for key in CREDENTIALS if key in status]
    try:
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


def fit_to_serve(pid: int) -> bool:
    """Whether a process forked ahead of its command (a relay, a worker) can still be given one:
    it is there and not stopped (SIGSTOP cannot be held, and a stopped process would hang its
    caller), and has no signal pending (a worker holds them all while it waits, so one sent
    then, ``pkill``, would strike once it has its caller's dispositions)."""
    status = _status(pid)
    if status is None or not _live(status):
        return False
    try:
        return all(int(status[key], 16) == 0 for key in ("SigPnd", "ShdPnd"))
    except (KeyError, ValueError):
        return False


# Process states (/proc/PID/status) of a process that can take a command: running, sleeping,
# in an uninterruptible wait. Not stopped or traced (T, t), nor dead (Z, X).
_LIVE_STATES = ("R", "S", "D")


def _live(status: dict[str, str]) -> bool:
    return status.get("State", "")[:1] in _LIVE_STATES


def _status(pid: int) -> dict[str, str] | None:
    """/proc/PID/status, read once, as its fields; None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            lines = status.read().splitlines()
    except OSError:
        return None
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


# This process's identity and the pid it was read for: a fork is another process.
_own: tuple[int, list[str] | None] | None = None


def own_identity() -> list[str] | None:
    """:func:`identity` of this process, read once: a caller needs it twice (for its socket's
    name and to check its server), and every read is a dozen system calls."""
    global _own
    pid = os.getpid()
    if _own is None or _own[0] != pid:
        _own = (pid, identity(pid))
    return _own[1]


def peer(sock) -> tuple[int, int, int]:  # noqa: ANN001 - socket.socket or _socket.socket alike
    """pid, uid and gid of the process at the other end of a Unix socket (Linux's SO_PEERCRED)."""
    import _socket

    pid, uid, gid = _PEERCRED.unpack(sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, _PEERCRED.size))
    return pid, uid, gid
