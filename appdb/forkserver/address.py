"""Where a fork server listens: a Unix socket named for everything a worker inherits from it.

The name covers the interpreter, its flags and module path, the size and mtime of every appdb
source file and of the packages the served commands import (with every installed package's
name and version), the caller's identity and every variable of the environment that a process may
read only as it starts, so a changed checkout or setting gets a server of its own and nothing
runs stale. It lives in a
folder only its owner can enter, in a parent nobody else can rename it in.

Builtins only, like the rest of the caller's side: every revert of a chain computes this
name before it can reach the server (``hashlib`` and ``socket`` were 7 ms of its 40, issue 20).
"""

from __future__ import annotations

import os
import stat
import sys

from appdb.forkserver.identity import own_identity

# sun_path holds 108 bytes on Linux (104 on the BSDs); a longer folder is passed over.
_MAX_SOCKET_PATH = 104
# serve() binds "<path>.<pid>" first: room for it.
_STAGING_SUFFIX = 8


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


# The variables a worker may take from its caller: read afresh by each command (appdb's own, and
# libpq's at each connect), or by nothing (a shell's bookkeeping; Pulumi's record of a create's
# output, which differs for each delete of a chain). Any other variable may have been read once,
# as the server started (psycopg's PSYCOPG_IMPL, the loader's LD_*, OpenSSL's, the locale...):
# a caller whose value differs gets a server of its own.
_PER_COMMAND = frozenset({"DATABASE_URL", "PULUMI_COMMAND_STDOUT", "PULUMI_COMMAND_STDERR", "PWD", "OLDPWD", "_",
                          "SHLVL", "XDG_RUNTIME_DIR"})
_PER_COMMAND_PREFIXES = ("PG", "APPDB_")
# libpq binds its message catalogue once a process.
_READ_ONCE = frozenset({"PGLOCALEDIR"})


def _server_key() -> str:
    """What a worker inherits from its server and a caller must share: interpreter, its flags and
    module path (``python -m`` puts the folder it ran in there), code, identity (credentials,
    namespaces, root, label), and every variable of the environment but those read per command."""
    inherited = sorted(f"{key}={value}" for key, value in os.environ.items() if not _read_per_command(key))
    return "\0".join([sys.executable, repr(sys.flags), repr(sys.path), _code_stamp(),
                      *(own_identity() or ["unknown"]), _scheduling(), *inherited])


def _scheduling() -> str:
    """The scheduling policy and priority, nice value, CPU affinity and OOM score a worker would
    have from its server: a caller started with ``nice -n 15`` or ``chrt --idle 0`` (or pinned, or
    made the OOM killer's first pick) gets a server of its own, that has them too."""
    try:
        with open("/proc/self/oom_score_adj", encoding="ascii") as adj:
            oom = adj.read().strip()
    except OSError:
        oom = "?"
    policy = f"{os.sched_getscheduler(0)}/{os.sched_getparam(0).sched_priority}"
    return (f"policy={policy} nice={os.getpriority(os.PRIO_PROCESS, 0)} cpus={sorted(os.sched_getaffinity(0))} "
            f"oom={oom}")


def _read_per_command(name: str) -> bool:
    return name not in _READ_ONCE and (name in _PER_COMMAND or name.startswith(_PER_COMMAND_PREFIXES))


# What a server imports from the virtualenv (the served commands' PRELOAD, and what `site` runs
# from .pth files: setuptools' _distutils_hack), by their names in site-packages;
# tests/test_forkserver.py checks that a server loads nothing else from there. A package of
# another name would be stamped by its version only (the listing).
DEPENDENCIES = ("psycopg", "psycopg_binary", "psycopg_binary.libs", "psycopg_c", "typing_extensions.py",
                "_distutils_hack")


def _code_stamp() -> str:
    """The path, size and mtime of every appdb source file, and of every file of the packages the
    served commands import, with the names (so the versions) of every installed package: any edit,
    upgrade or install changes it."""
    root = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    parts = _files_stamp(root, (".py", ".sql"))
    for folder in site_packages():
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            parts.append(f"{folder}:?")
            continue
        parts.append("\0".join(names))
        for name in (*DEPENDENCIES, *(n for n in names if n.endswith(".pth"))):
            parts += _files_stamp(os.path.join(folder, name), None)
    return "\n".join(parts)


def site_packages() -> list[str]:
    """Where ``site`` finds the packages, computed without it (a served caller skips ``site``: with
    -S, Python 3.11 has not even taken in the virtualenv): the virtualenv's, when the interpreter is
    one's, else the installation's."""
    venv = os.path.dirname(os.path.dirname(sys.executable))
    prefix = venv if os.path.isfile(os.path.join(venv, "pyvenv.cfg")) else sys.prefix
    return [os.path.join(prefix, "lib", f"python{sys.version_info[0]}.{sys.version_info[1]}", "site-packages")]


def _files_stamp(root: str, suffixes: tuple[str, ...] | None) -> list[str]:
    """Each file under ``root`` (those ending in ``suffixes``, or all) with its size and mtime;
    a file that is ``root`` itself counts too, a missing ``root`` adds nothing."""
    try:
        info = os.stat(root)
    except OSError:
        return []
    if not stat.S_ISDIR(info.st_mode):
        return [f"{root}:{info.st_size}:{info.st_mtime_ns}"]
    parts = [root]
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if suffixes is None or name.endswith(suffixes):
                try:
                    info = os.stat(os.path.join(folder, name))
                except OSError:  # a dangling link (an editor's lock file, .#cli.py): named as such
                    parts.append(f"{folder}/{name}:?")
                    continue
                parts.append(f"{folder}/{name}:{info.st_size}:{info.st_mtime_ns}")
    return parts


def _digest(text: str) -> str:
    """SHA-256, from the interpreter's own module when it has one (``_sha2`` since 3.12,
    ``_sha256`` before): ``hashlib`` loads OpenSSL first, about 2 ms a revert."""
    try:
        from _sha2 import sha256  # type: ignore[import-not-found]
    except ImportError:
        try:
            from _sha256 import sha256  # type: ignore[import-not-found,no-redef]
        except ImportError:  # a build without its own hashes (--without-builtin-hashlib-hashes)
            from hashlib import sha256  # type: ignore[assignment]
    return sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:32]
