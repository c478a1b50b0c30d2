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


# Process states (/proc/PID/status) of a process that can take a command: running, sleeping,
# in an uninterruptible wait. Not stopped or traced (T, t), nor dead (Z, X).
_LIVE_STATES = ("R", "S", "D")


def running(pid: int) -> bool:
    """Whether a process is there and not stopped: a caller sends nothing to a server that is
    (``kill -STOP``, a debugger, a frozen cgroup), which would hold its command for ever."""
    fields = _status_fields(pid)
    return fields is not None and fields.get("State", "")[:1] in _LIVE_STATES


def fit_to_serve(pid: int) -> bool:
    """Whether a process forked ahead of its command (a relay, a worker) can still be given one:
    it is :func:`running` (SIGSTOP cannot be held, and a stopped process would hang its
    caller), and has no signal pending (a worker holds them all while it waits, so one sent
    then, ``pkill``, would strike once it has its caller's dispositions)."""
    fields = _status_fields(pid)
    if fields is None or fields.get("State", "")[:1] not in _LIVE_STATES:
        return False
    try:
        return all(int(fields[key], 16) == 0 for key in ("SigPnd", "ShdPnd"))
    except (KeyError, ValueError):
        return False


def _status_fields(pid: int) -> dict[str, str] | None:
    """State and pending signals from /proc/PID/status; None when it cannot be read."""
    fields: dict[str, str] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("State", "SigPnd", "ShdPnd"):
                    fields[key] = value.strip()
    except OSError:
        return None
    return fields


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
