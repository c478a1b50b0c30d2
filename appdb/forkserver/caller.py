"""The caller's side: hand this process's command to a server and take its exit status.

Every revert of a chain runs this before anything else, so it imports builtins only
(``_socket``, not ``socket``, which brings ``enum`` and ``selectors``): with the address and
the protocol, the caller's work is Python's start-up and a few system calls.
"""

from __future__ import annotations

import _socket
import os
import sys

from appdb.forkserver.identity import identity, own_identity, peer
from appdb.forkserver.protocol import HEADER, INTERRUPT, STARTED, STATUS, encode_request, receive_exactly

# What a caller says when its command started in a worker and no status came back.
COMMAND_LOST = ("the fork server's process running this command ended before it said how the command "
                "ended (killed?), so it is not run again: see 'appdb status' for what was applied")
# The caller's stdin, stdout and stderr: the worker takes them over.
_STANDARD_FDS = (0, 1, 2)
# Paths that name a process's own descriptors: only the caller has its others.
_OWN_DESCRIPTOR_PATHS = ("/dev/fd/", "/proc/self/")


def supported() -> bool:
    """Peer credentials, fd passing, process fds and /proc: Linux's, all four."""
    return (hasattr(_socket, "SO_PEERCRED") and hasattr(_socket, "SCM_RIGHTS")
            and hasattr(_socket.socket, "sendmsg") and hasattr(os, "pidfd_open") and os.path.isdir("/proc/self"))


def run_via_server(path: str, argv: list[str]) -> int | None:
    """The command's exit status from the server; None when no server ran it.

    Not for a process that began with stdin, stdout or stderr closed: the socket would take
    that number, and the worker would be handed the caller's own end of it as that stream
    (its output read as the protocol's bytes; a killed caller unnoticed). Nor for one whose
    arguments or environment name its own descriptors by path: the worker has no others."""
    if not all(_is_open(fd) for fd in _STANDARD_FDS) or _names_own_descriptors(argv):
        return None
    client = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    interrupted = started = False
    reply = None
    try:
        client.connect(path)
        server_pid, server_uid, _gid = peer(client)
        own = own_identity()
        if server_uid != os.getuid() or own is None or identity(server_pid, running=True) != own:
            # Not a server like us (another user's, a folder swapped under us), or stopped
            # (kill -STOP, a debugger: it would hold the command, and us, for ever): send nothing.
            return None
        body = encode_request(argv)
        fds = b"".join(fd.to_bytes(4, sys.byteorder) for fd in _STANDARD_FDS)  # a C int each
        client.sendmsg([HEADER.pack(len(body))], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)])
        client.sendall(body)
        while True:
            try:
                if not started:
                    started = receive_exactly(client, len(STARTED)) == STARTED
                    if not started:
                        break  # refused, or closed before a worker had it: nothing ran
                reply = receive_exactly(client, STATUS.size)
                break
            except KeyboardInterrupt:
                # Ctrl-C: the worker gets SIGINT and answers it as a process of its own would.
                interrupted = True
                _pass_on_interrupt(client)
    except OSError:
        reply = None
    except KeyboardInterrupt:
        interrupted = True  # before the request was out, or while passing one on: closing stops the worker
    finally:
        client.close()
    if reply is None and started and not interrupted:
        # A worker had the command and its status never came (its relay killed): it may have done
        # anything up to its end, so it is not run again, and its caller does not say it is done.
        sys.stderr.write(f"appdb: error: {COMMAND_LOST}\n")
        return 1
    if reply is None:
        # Interrupted, the command must not start again here: the one-line answer to Ctrl-C.
        return interrupted_status() if interrupted else None
    return STATUS.unpack(reply)[0]


def _pass_on_interrupt(client) -> None:  # noqa: ANN001 - a _socket.socket
    """Tell the relay of a Ctrl-C; a second Ctrl-C while this one is on its way is passed on too,
    not taken for a lost command."""
    while True:
        try:
            client.sendall(INTERRUPT)
            return
        except KeyboardInterrupt:
            continue
        except OSError:
            return  # the relay has closed: a status it sent first is still to be read


def _names_own_descriptors(argv: list[str]) -> bool:
    """Whether an argument or variable names one of this process's descriptors by path
    (``PGSERVICEFILE=<(...)`` is ``/dev/fd/63``): a worker has only stdin, stdout and stderr."""
    values = [*argv, *os.environ.values()]
    return any(marker in value for value in values for marker in _OWN_DESCRIPTOR_PATHS)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def interrupted_status() -> int:
    """The CLI's own answer to Ctrl-C (appdb.cli.main), where the CLI itself never ran."""
    from appdb.errors import INTERRUPTED, INTERRUPTED_EXIT

    print(f"appdb: error: {INTERRUPTED}", file=sys.stderr)
    return INTERRUPTED_EXIT
