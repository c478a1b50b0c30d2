"""The relay: one per command, between its caller and its worker.

The server forks it ahead, with its worker, while the command before runs; it waits for the
server to hand it a caller, checks who is calling, passes the command to the worker and
sends back the worker's exit status, then exits. While the worker runs, it passes on what the
caller says or does: a Ctrl-C is SIGINT to the worker; the caller gone (killed) is SIGTERM,
then SIGKILL after :data:`KILL_AFTER_SECONDS`.
"""

from __future__ import annotations

import os
import signal
import socket
from typing import NoReturn

from appdb.forkserver.identity import fit_to_serve, identity, peer
from appdb.forkserver.protocol import INTERRUPT, STARTED, STATUS, read_exactly, receive_request, send_request
from appdb.forkserver.worker import Worker, dismiss, start_worker

# After SIGTERM to a worker whose caller died, how long before SIGKILL.
KILL_AFTER_SECONDS = 5.0


def relay(channel: socket.socket, server_fds: list[int], own: list[str] | None) -> NoReturn:
    """A relay's whole life: fork the worker, wait for a caller, serve it, exit. A worker that
    got no command (the caller refused or gone, the server closed) is ended and reaped here, so
    none is left to a PID 1 that may never reap it."""
    worker: Worker | None = None
    try:
        for fd in server_fds:
            os.close(fd)  # the listener, the lock, a caller's socket: a new server may start while we work
        worker = start_worker([channel])
        conn = _receive_caller(channel)
        channel.close()
        if conn is not None:
            with conn:
                if _accepted(conn, own):
                    if not fit_to_serve(worker.pid):  # stopped, or signalled, while it waited
                        dismiss(worker)
                        worker = start_worker([conn])
                    _serve(conn, worker)
    except BaseException:  # noqa: BLE001 - the caller, seeing no status, runs the command itself
        pass
    finally:
        try:
            if worker is not None and not worker.given:
                dismiss(worker)
        finally:
            os._exit(0)  # a worker given one goes with us (PR_SET_PDEATHSIG) if it is still there


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


def _accepted(conn: socket.socket, own: list[str] | None) -> bool:
    """Whether the caller is one the worker may serve: the same user, with the same groups,
    capabilities, namespaces... as the server (appdb.forkserver.identity)."""
    pid, uid, _gid = peer(conn)
    return uid == os.getuid() and own is not None and identity(pid) == own


def _serve(conn: socket.socket, worker: Worker) -> None:
    """Pass the caller's command to the worker and send back its status."""
    received = receive_request(conn)
    if received is None:
        return
    body, fds = received
    try:
        send_request(worker.channel, body, fds)
    finally:
        for fd in fds:
            os.close(fd)
    worker.given = True
    worker.channel.close()
    conn.sendall(STARTED)  # the caller must not run it again now; a caller gone is _wait's to see
    status, exited = _wait(worker.pid, conn, worker.report)
    try:
        conn.sendall(STATUS.pack(status))
    finally:
        if not exited:
            os.waitpid(worker.pid, 0)  # it has reported and is leaving: reaped here, whatever the caller did
        worker.reaped = True


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
