"""What a caller and its server say to each other on the socket.

The caller sends a header (the request's length, with its stdin, stdout and stderr attached
by SCM_RIGHTS), then the request: what a process of its own would have had. While it waits it
may send :data:`INTERRUPT` (its Ctrl-C); the server says :data:`STARTED` once a worker has the
command, then answers with the exit status. Builtins only: the caller imports this before it
can reach a server.
"""

from __future__ import annotations

import os
import struct
from _collections_abc import Callable  # what collections.abc re-exports; os has loaded it already

HEADER = struct.Struct("!I")
STATUS = struct.Struct("!i")
MAX_REQUEST = 16 * 1024 * 1024
# What the caller sends after its request, while it waits: Ctrl-C.
INTERRUPT = b"I"
# What the server sends once a worker has the command: from then on the command may have done
# something, so a caller that gets no status must not run it again (caller.COMMAND_LOST).
STARTED = b"S"
_VERSION = b"3"


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
    fields = [_VERSION, os.getcwdb(), b"%d" % umask, _numbers(ignored), _numbers(blocked), b"%d" % len(argv),
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
    if version != _VERSION or not 0 <= count <= len(fields) - 6 or not 0 <= umask <= 0o777:
        return None
    argv = fields[6:6 + count]
    env = dict(entry.partition(b"=")[::2] for entry in fields[6 + count:] if entry.find(b"=") > 0)
    return Request(cwd, umask, ignored, blocked, argv, env)


def receive_exactly(sock, size: int) -> bytes | None:  # noqa: ANN001 - socket.socket or _socket.socket
    """``size`` bytes from a socket, or None when the other end closes first."""
    return read_exactly(sock.recv, size)


def read_exactly(read: Callable[[int], bytes], size: int) -> bytes | None:
    """``size`` bytes from ``read`` (a socket's ``recv``, a pipe's ``os.read``), or None at its end first."""
    data = b""
    while len(data) < size:
        chunk = read(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _signal_state() -> tuple[set[int], set[int]]:
    """The signals this process ignores and blocks: a process of its own would have inherited them.
    ``_signal``, not ``signal``: the same calls, without importing ``enum`` first."""
    import _signal

    ignored = {sig for sig in _signal.valid_signals()
               if sig not in (_signal.SIGKILL, _signal.SIGSTOP) and _signal.getsignal(sig) == _signal.SIG_IGN}
    blocked = {int(sig) for sig in _signal.pthread_sigmask(_signal.SIG_BLOCK, [])}
    return ignored, blocked


def _numbers(values: set[int]) -> bytes:
    return b",".join(b"%d" % value for value in sorted(values))


def _parse_numbers(field: bytes) -> set[int]:
    return {int(value) for value in field.split(b",")} if field else set()


def receive_request(sock) -> tuple[bytes, list[int]] | None:  # noqa: ANN001 - socket.socket
    """A request as a caller sends it: its body (checked) and its stdin, stdout and stderr.
    None, with nothing left open, for anything else. The server's side only (``socket``)."""
    import socket

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


def send_request(sock, body: bytes, fds: list[int]) -> None:  # noqa: ANN001 - socket.socket
    """Pass a request on (a relay to its worker), framed as its caller framed it."""
    import socket

    socket.send_fds(sock, [HEADER.pack(len(body))], fds)
    sock.sendall(body)
