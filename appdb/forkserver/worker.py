"""The worker: a process forked ahead of its command, which becomes its caller's process.

A relay forks it while the command before runs, so that no fork of the large server is in a
revert's time (about 2.5 ms of each, issue 20). It waits with every signal held for the
command its relay passes on (:mod:`appdb.forkserver.protocol`'s framing), takes over the
caller's stdin, stdout and stderr, environment, folder, umask, signal dispositions and
arguments, runs :func:`appdb.cli.main` exactly as a new process would, writes its exit status
to its relay and exits with it.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from typing import NoReturn

from appdb.forkserver.caller import interrupted_status
from appdb.forkserver.protocol import STATUS, Request, decode_request, receive_request

_PR_SET_PDEATHSIG = 1
# Every signal, made once: a worker holds them all before it reports (_report_and_exit).
_EVERY_SIGNAL = frozenset(signal.valid_signals())
# Python's own exit status when it cannot flush stdout or stderr at the end (a closed pipe).
_FLUSH_FAILED = 120


class Worker:
    """A worker as its relay sees it: its pid, the channel its command goes down, the pipe it
    writes its exit status to; whether it has been given its command, and been reaped."""

    def __init__(self, pid: int, channel: socket.socket, report: int) -> None:
        self.pid, self.channel, self.report = pid, channel, report
        self.given = False
        self.reaped = False


def start_worker(inherited: list[socket.socket]) -> Worker:
    """Fork a worker, every signal held: one that comes before it has its caller's dispositions
    stays pending until then, neither lost nor taken by the server's handlers. ``inherited``:
    the relay's sockets, which the worker closes (it keeps only what its command gives it)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    # The worker writes its status here just before it exits: the caller has it without
    # waiting for the kernel to tear a large process down (about 1.5 ms a revert).
    report, report_end = os.pipe()
    relay = os.getpid()
    mask = signal.pthread_sigmask(signal.SIG_SETMASK, signal.valid_signals())
    try:
        pid = os.fork()
    except OSError:
        for sock in (ours, theirs):
            sock.close()
        for fd in (report, report_end):
            os.close(fd)
        raise
    finally:
        if os.getpid() == relay:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    if pid == 0:
        _worker_process(theirs, [ours, *inherited], relay, report, report_end)
    theirs.close()
    os.close(report_end)
    return Worker(pid, ours, report)


def dismiss(worker: Worker) -> None:
    """End a worker that was given no command (its caller refused, gone, or its server closed),
    and reap it: SIGKILL, which a stopped process takes too, so this never waits on one."""
    if worker.given or worker.reaped:
        return
    worker.channel.close()
    os.close(worker.report)
    os.kill(worker.pid, signal.SIGKILL)
    os.waitpid(worker.pid, 0)
    worker.reaped = True


def _worker_process(channel: socket.socket, relay_fds: list[socket.socket], relay: int, report_read: int,
                    report: int) -> NoReturn:
    """The worker's whole life, which never returns into the relay's code it was forked from
    (that code's exit is 0: a failed revert would reach Pulumi as done). It waits for its
    command; should anything escape :func:`_work`, a Ctrl-C in the instant before its signals
    are held, the worker exits 130 (what a process of its own says to one), or 1, with no
    report: the relay takes that status. A relay that leaves with no command for it ends it
    too: exit 0, nobody waits for it."""
    code = 1
    try:
        for sock in relay_fds:
            sock.close()
        os.close(report_read)
        _die_with(relay)
        received = receive_request(channel)
        channel.close()
        if received is None:
            code = 0
            return
        body, fds = received
        request = decode_request(body)
        if request is not None:  # the relay checked it
            _work(request, fds, report)
    except KeyboardInterrupt:
        code = 130
        _hold_signals()
        _flush()  # what the command printed still reaches its reader, as at a process's own end
    finally:
        os._exit(code)


def _work(request: Request, fds: list[int], report: int) -> None:
    """Become the caller's process, run the command, report and exit with its status."""
    status = 1
    try:
        for target, fd in zip((0, 1, 2), fds):
            os.dup2(fd, target)
        for fd in fds:
            os.close(fd)
        # Python buffers stdout by line to a terminal, else by block: as the caller's stdout is,
        # not as the first caller's was when the server started.
        sys.stdout.reconfigure(line_buffering=os.isatty(1))
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
