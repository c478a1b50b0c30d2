"""The local database: a PostgreSQL cluster owned by the project, shaped like Supabase.

``appdb local up`` runs it from ``.appdb/local`` (git-ignored) on 127.0.0.1:54322, the
port Supabase's CLI uses, and the tests, ``appdb schema``, the benchmarks and CI start
throwaway ones the same way. The cluster's bootstrap superuser is ``supabase_admin``;
the ``postgres`` login that deploys is not a superuser, exactly as on Supabase, so
permission problems show up here first.

Nobody but the user who started it gets in:

- Every password is random and made for this cluster (:func:`new_password`): one each
  for ``supabase_admin``, ``postgres`` and ``app_backend`` (which the local stack gives
  the backend's login). They live in ``HOME/pgpass``, a libpq password file created 0600
  for that user and never by anyone else. The DSNs made here name that file
  (``passfile``) instead of holding a password; only :meth:`Cluster.url` spells one out.
- The superuser logs in only through the Unix socket, in ``HOME/run``, a folder (0700)
  only the server's OS user (and root) can enter; ``pg_hba.conf``, written here on every
  ``up``, rejects it over TCP. The other logins use TCP on loopback, with their password.

PostgreSQL refuses to run as root, so when we are root the server programs run as the
``postgres`` OS user, which must be able to enter every folder above ``HOME``. ``up``
never changes the mode of a folder it did not make: when that user cannot get in, it
refuses and says what to do. Nor does it work in a folder someone else could change
under it (:meth:`Cluster.check_home`): as root it hands folders to the server's OS user,
and a link planted there would choose which. The server programs get a minimal
environment, and a postmaster.pid is believed only for this cluster's postmaster.
Layout of ``HOME``::

    data/    the cluster                  server's OS user, 0700
    run/     its Unix socket              server's OS user, 0700
    log/     postgres.log                 server's OS user, 0700
    pgpass   the passwords                the user who ran `up`, 0600
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import re
import secrets
import shutil
import stat
import string
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import psycopg
from psycopg import conninfo, sql

from appdb.errors import AppdbError, ConfigError
from appdb.local.postgres import data_major, find_bindir, project_major
from appdb.redact import redact

log = logging.getLogger(__name__)

PID_FILE = "postmaster.pid"
_PORT_LINE = re.compile(r"^\s*port\s*(?:=\s*)?'?(\d{1,5})'?\s*(?:#.*)?$", re.ASCII | re.IGNORECASE)
# How much of the server's log a failed start reads for its reason, and how a line says its level.
_LOG_TAIL_BYTES = 16384
_LOG_LEVEL = re.compile(r"\b(LOG|WARNING|ERROR|FATAL|PANIC):\s+")
DEFAULT_HOME = Path(".appdb/local")
DEFAULT_PORT = 54322
SUPERUSER = "supabase_admin"
LOGIN = "postgres"
BACKEND = "app_backend"
# The roles whose passwords a cluster's password file holds.
ROLES = (SUPERUSER, LOGIN, BACKEND)
SERVER_USER = "postgres"
PASSWORD_FILE = "pgpass"
# The fixed passwords clusters made by earlier versions had: published in this repository,
# and before that Supabase's CLI's well-known one. `up` logs in with them only to replace
# them with random ones, once.
OLD_PASSWORDS = ("Qm7x-Vt3k-Rw9p-Hc2d", "postgres")


def _package_sql(name: str) -> str:
    return resources.files("appdb.local").joinpath(name).read_text(encoding="utf-8")


def pg_hba(superuser: str = SUPERUSER) -> str:
    """Who may connect how: the superuser through the socket only; every other login also over loopback TCP."""
    return (
        "# Written by appdb (appdb/local.py) when the cluster is made and on every `appdb local up`.\n"
        "# TYPE  DATABASE  USER  ADDRESS  METHOD\n"
        "local   all       all            scram-sha-256\n"
        f"host    all       {superuser}  all  reject\n"
        "host    all       all   127.0.0.1/32  scram-sha-256\n"
        "host    all       all   ::1/128       scram-sha-256\n"
    )


def new_password(groups: int = 6) -> str:
    """A random password like ``Qm7x-Vt3k-...``: about 104 bits, and no word and no identifier.

    Pulumi masks every occurrence of a secret's text in what it prints, and a password
    that is a word garbles its output (`postgres` turned `pulumi-resource-postgresql` into
    `pulumi-resource-[secret]ql`). A digit in every group of four and the dashes keep
    this one from ever being a word or an identifier; it needs no quoting in a URL or
    in a libpq password file.
    """
    upper, lower, digits = string.ascii_uppercase, string.ascii_lowercase, string.digits
    return "-".join(
        secrets.choice(upper) + secrets.choice(lower) + secrets.choice(digits) + secrets.choice(lower)
        for _ in range(groups)
    )


# --- the password file ------------------------------------------------------------------


def write_password_file(path: Path, passwords: dict[str, str]) -> None:
    """A libpq password file (``*:*:*:role:password`` lines), created 0600 and never over an existing one.

    O_EXCL makes the file, with its mode, in one step: no moment when another user could
    open it, and no following a link someone put in its place.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.writelines(f"*:*:*:{role}:{password}\n" for role, password in passwords.items())


def read_password_file(path: Path) -> dict[str, str]:
    """The passwords by role; refused unless the file is ours and no one else can read it."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise ConfigError(
            f"no local database in {path.parent} (no {path.name} file): start it with 'bin/appdb local up'"
        ) from None
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise ConfigError(
            f"{path} must be a file of yours that only you can read: 'chmod 600' it, "
            "or start over with 'bin/appdb local reset' (this wipes the local database)"
        )
    passwords = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split(":")
        if len(fields) == 5:
            passwords[fields[3]] = fields[4]
    return passwords


# --- the server's OS user and its folders -------------------------------------------------


def server_account() -> pwd.struct_passwd | None:
    """The OS account that runs the server when we are root (PostgreSQL refuses root); None: ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise ConfigError(
            f"running as root, but there is no '{SERVER_USER}' OS user to run the server: "
            "install the postgresql package or run as an ordinary user"
        ) from None


def blocked_folder(path: Path, account: pwd.struct_passwd) -> tuple[Path, int] | None:
    """The first existing folder on the way to ``path`` (itself included) that ``account`` cannot enter, with its mode.

    Read from the mode bits, owner and groups, as the kernel decides (ACLs aside).
    """
    groups = set(os.getgrouplist(account.pw_name, account.pw_gid))
    path = path.resolve()
    for folder in [*reversed(path.parents), path]:
        try:
            info = folder.stat()
        except FileNotFoundError:
            return None
        if info.st_uid == account.pw_uid:
            bit = stat.S_IXUSR
        elif info.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            return folder, stat.S_IMODE(info.st_mode)
    return None


# What the server programs, and so the server, get of our environment: what they need and no
# more, so a token or a DATABASE_URL exported in this shell never reaches the server's OS user.
_SERVER_ENVIRONMENT = ("LANG", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TZ", "TMPDIR")
_SERVER_PATH = "/usr/local/bin:/usr/bin:/bin"


def _server_environment(account: pwd.struct_passwd | None) -> dict[str, str]:
    env = {key: os.environ[key] for key in _SERVER_ENVIRONMENT if key in os.environ}
    env["PATH"] = _SERVER_PATH
    env["HOME"] = account.pw_dir if account is not None else os.environ.get("HOME", "/")
    return env


def _writable_by_others(info: os.stat_result) -> bool:
    """Writable by anyone but the owner: by all, or by a group someone else is in."""
    if info.st_mode & stat.S_IWOTH:
        return True
    return bool(info.st_mode & stat.S_IWGRP) and not _private_group(info.st_gid, info.st_uid)


def _private_group(gid: int, uid: int) -> bool:
    """Whether ``gid`` is ``uid``'s own group: nobody else is in it, or has it as their group."""
    try:
        owner = pwd.getpwuid(uid).pw_name
        members = set(grp.getgrgid(gid).gr_mem)
    except KeyError:
        return False
    if members - {owner}:
        return False
    return all(account.pw_uid == uid for account in pwd.getpwall() if account.pw_gid == gid)


def _owner(uid: int) -> str:
    try:
        return f"the OS user {pwd.getpwuid(uid).pw_name}"
    except KeyError:
        return f"uid {uid}"


def _folders_above(home: Path) -> list[Path]:
    """The existing folders above ``home``, as written and as its links resolve: whoever may change either decides."""
    written = [folder for folder in home.parents if folder.exists()]
    resolved = [folder for folder in home.resolve().parents if folder.exists()]
    return list(dict.fromkeys([*written, *resolved]))


def _open_to_server(folder: Path, account: pwd.struct_passwd | None) -> None:
    """A folder we just made, that the server's OS user must pass through: group of that user, 0710."""
    if account is not None:
        os.chown(folder, -1, account.pw_gid)
        os.chmod(folder, 0o710)


def _make_home(home: Path, account: pwd.struct_passwd | None) -> None:
    """Makes ``home`` and whatever folders above it are missing; folders that exist are left as they are."""
    missing = [folder for folder in [home, *home.parents] if not folder.exists()]
    for folder in reversed(missing):
        folder.mkdir(mode=0o700)
        _open_to_server(folder, account)


def _server_folder(folder: Path, account: pwd.struct_passwd | None) -> None:
    """One of the cluster's own folders: the server's OS user's alone (0700), made if missing.

    An existing one is also set so: only clusters made by earlier versions had a socket
    folder others could enter. Never through a link: its owner and mode are set on the
    folder itself, or not at all.
    """
    folder.mkdir(mode=0o700, exist_ok=True)
    try:  # the folder itself, opened once: no link followed, nothing swapped in between
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        raise ConfigError(f"{folder} is a link or a file, not the local database's own folder: remove it "
                          "('bin/appdb local reset' makes the cluster anew)") from None
    try:
        if account is not None:
            os.fchown(fd, account.pw_uid, account.pw_gid)
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


def _append_to_server_file(path: Path, text: str, account: pwd.struct_passwd | None) -> None:
    """Append to a file initdb made in the data folder, which the server's OS user owns: never
    through a link it could have put there, and only to a plain file of that user's."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
    try:
        info = os.fstat(fd)
        owner = os.geteuid() if account is None else account.pw_uid
        if not stat.S_ISREG(info.st_mode) or info.st_uid != owner:
            raise ConfigError(f"{path} is not the file initdb made: 'bin/appdb local reset' makes the cluster anew")
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)


def _write_server_file(path: Path, text: str, account: pwd.struct_passwd | None) -> None:
    """A file for the server's OS user only (0600 from the start), replacing ``path`` in one step."""
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        if account is not None:
            os.fchown(fd, account.pw_uid, account.pw_gid)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def temporary_home(prefix: str) -> Path:
    """A new temporary folder for a throwaway cluster, which the server's OS user can enter.

    ``mkdtemp`` makes it 0700 for us; as root the server runs as ``postgres``, so this
    folder (ours: we just made it) gets its group and 0710. Remove it with shutil.rmtree.
    """
    home = Path(tempfile.mkdtemp(prefix=prefix))
    _open_to_server(home, server_account())
    return home


def _conf_string(value: str) -> str:
    """``value`` as a postgresql.conf string: a quote or backslash in a folder's name must not end or escape it."""
    escaped = value.replace("\\", "\\\\").replace("'", "''").replace("\n", "\\n").replace("\r", "\\r")
    return f"'{escaped}'"


# --- the cluster ------------------------------------------------------------------------


@dataclass
class Cluster:
    """One PostgreSQL cluster in ``home`` (see the module's docstring for what is in it)."""

    home: Path = DEFAULT_HOME
    port: int = DEFAULT_PORT
    listen: str = "127.0.0.1"
    settings: dict[str, str] = field(default_factory=dict)
    # The PostgreSQL major version it runs; None: the project's (appdb/local/postgres.py).
    major: int | None = None

    def __post_init__(self) -> None:
        self.home = Path(self.home).absolute()
        if self.major is None:
            self.major = project_major()

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def socket_dir(self) -> Path:
        return self.home / "run"

    @property
    def log_dir(self) -> Path:
        return self.home / "log"

    @property
    def logfile(self) -> Path:
        return self.log_dir / "postgres.log"

    @property
    def password_file(self) -> Path:
        return self.home / PASSWORD_FILE

    # --- lifecycle -----------------------------------------------------------------

    def is_initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def is_running(self) -> bool:
        if not self.is_initialised():
            return False
        if os.path.isdir("/proc/self"):
            return self._postmaster_pid() is not None
        result = self._run_server_tool("pg_ctl", "-D", str(self.data_dir), "status", check=False)
        return result.returncode == 0

    def _postmaster_pid(self) -> int | None:
        """The pid in postmaster.pid, when it is this cluster's postmaster: alive and working in this data folder."""
        lines = self._postmaster_lines()
        return int(lines[0]) if lines else None

    def _postmaster_lines(self) -> list[str] | None:
        """postmaster.pid's lines (pid, data folder, start time, port...), when it names this cluster's postmaster.

        After a crash or a reboot the file can name a pid that went to another process, which
        pg_ctl (it only asks whether the pid is alive) would stop or signal to reload.
        """
        try:
            lines = (self.data_dir / PID_FILE).read_text(encoding="ascii", errors="replace").split("\n")
            pid = int(lines[0])
            return lines if pid > 0 and os.path.samefile(f"/proc/{pid}/cwd", self.data_dir) else None
        except (OSError, ValueError):
            return None

    def _forget_stale_pid_file(self) -> None:
        """A postmaster.pid that names no postmaster of ours: removed, or the server would not start beside it."""
        if os.path.isdir("/proc/self") and self._postmaster_pid() is None:
            (self.data_dir / PID_FILE).unlink(missing_ok=True)

    def up(self, seed: bool = False) -> bool:
        """Initialise if needed, start if stopped, and (re)apply the Supabase shape.

        Returns True when the cluster still had the fixed passwords of an earlier version
        and now has random ones (the caller tells the user, once).
        """
        self.check_reachable()
        if self.is_initialised():
            self.check_major()
            self.secure()
        else:
            self.init()
        reloaded_at = None
        if self.is_running():
            reloaded_at = self.reload()
        else:
            self.start()
        replaced = self._replace_old_passwords()
        if reloaded_at is not None:
            self._wait_for_reload(reloaded_at)
        self.shape("postgres", seed=seed)
        return replaced

    def init(self) -> None:
        """A new cluster: its folders, its passwords, initdb, our settings and pg_hba.conf. Not started."""
        account = server_account()
        self.check_reachable()
        _make_home(self.home, account)
        for folder in (self.data_dir, self.socket_dir, self.log_dir):
            _server_folder(folder, account)
        self._ensure_password_file()
        # initdb runs as the server's OS user and reads the superuser's password from a
        # file: one in the socket folder, which that user alone can enter, gone right after.
        pwfile = self.socket_dir / "initdb.pw"
        _write_server_file(pwfile, self.password(SUPERUSER) + "\n", account)
        try:
            self._run_server_tool(
                "initdb", "-D", str(self.data_dir), "-U", SUPERUSER, f"--pwfile={pwfile}",
                "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-instructions",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        conf = {
            "port": str(self.port),
            "listen_addresses": _conf_string(self.listen),
            "unix_socket_directories": _conf_string(str(self.socket_dir)),
            "password_encryption": "'scram-sha-256'",
            **self.settings,
        }
        text = "\n# appdb local\n" + "".join(f"{key} = {value}\n" for key, value in conf.items())
        _append_to_server_file(self.data_dir / "postgresql.conf", text, server_account())
        self._write_hba()

    def listening_port(self) -> int | None:
        """The port the running server listens on (postmaster.pid's fourth line), else the one
        it would listen on when started (its configuration); None when there is no cluster."""
        lines = self._postmaster_lines()
        if lines and len(lines) > 3 and lines[3].strip().isascii() and lines[3].strip().isdigit():
            return int(lines[3])
        return self.configured_port()

    def configured_port(self) -> int | None:
        """The port in the cluster's configuration (postgresql.conf, then postgresql.auto.conf); None if not made."""
        port = None
        for name in ("postgresql.conf", "postgresql.auto.conf"):
            try:
                lines = (self.data_dir / name).read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError:
                continue
            for line in lines:
                match = _PORT_LINE.match(line)
                if match:
                    port = int(match.group(1))
        return port

    def secure(self) -> None:
        """An existing cluster brought to the rules: its folders the server user's alone, a password file, our pg_hba.conf.

        For a cluster made by this version it changes nothing; a cluster made by an
        earlier one gets its passwords replaced by ``up`` after this.
        """
        account = server_account()
        for folder in (self.socket_dir, self.log_dir):
            _server_folder(folder, account)
        self._ensure_password_file()
        self._write_hba()

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._forget_stale_pid_file()
        began = self._log_size()
        result = self._run_server_tool(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.logfile), "-w", "-t", "60", "start", check=False
        )
        if result.returncode != 0:
            said = self._why_not_started(began)
            raise AppdbError(f"the local PostgreSQL did not start ({said or f'is port {self.port} in use?'}): "
                             f"see {self.logfile}")
        log.info("local PostgreSQL started on %s:%s", self.listen, self.port)

    def _log_size(self) -> int:
        """Where this start's lines will begin in the server's log (pg_ctl appends to it)."""
        try:
            return os.lstat(self.logfile).st_size
        except OSError:
            return 0

    def _why_not_started(self, since: int) -> str | None:
        """The server's first complaint written after ``since`` (this attempt's lines only: an
        older run's error, a statement with a password in it, is never taken for this failure),
        so a failed start says why in its one line ("could not bind IPv4 address ...: Address
        already in use"); None if the log will not say. The log is the server's OS user's, so it
        is read only as a plain file of that user's, never through a link or from a pipe, and
        at most :data:`_LOG_TAIL_BYTES` of it; what it says is masked."""
        for line in self._log_since(since):
            match = _LOG_LEVEL.search(line)
            if match and (match.group(1) in ("FATAL", "PANIC", "ERROR") or line[match.end():].startswith("could not")):
                return redact(line[match.end():].strip(), self._known_passwords())[:300] or None
        return None

    def _log_since(self, since: int) -> list[str]:
        """The log's lines from offset ``since``, at most _LOG_TAIL_BYTES of them; none if it is not a plain file of
        the server's OS user's (or ours, when we are that user)."""
        try:
            fd = os.open(self.logfile, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return []
        try:
            info = os.fstat(fd)
            account = server_account()
            owner = os.geteuid() if account is None else account.pw_uid
            if not stat.S_ISREG(info.st_mode) or info.st_uid != owner or info.st_size < since:
                return []
            os.lseek(fd, since, os.SEEK_SET)
            return os.read(fd, _LOG_TAIL_BYTES).decode("utf-8", "replace").splitlines()
        except OSError:
            return []
        finally:
            os.close(fd)

    def _known_passwords(self) -> set[str]:
        """The passwords of the password file, to mask; none when it cannot be read (the start's
        own failure is the message, not this)."""
        try:
            return set(read_password_file(self.password_file).values())
        except (AppdbError, OSError, UnicodeDecodeError):
            return set()

    def reload(self) -> float:
        """Make a running server read its configuration again; returns when it was asked (see _wait_for_reload)."""
        asked = time.time()
        self._run_server_tool("pg_ctl", "-D", str(self.data_dir), "reload")
        return asked

    def down(self) -> None:
        if self.is_running():
            self._run_server_tool("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")

    def reset(self, seed: bool = False) -> bool:
        """A brand-new cluster: everything, roles and passwords included, is as after the first ``up``.

        Only what the cluster made is removed; ``home`` itself stays, with its mode.
        """
        self.down()
        for folder in (self.data_dir, self.socket_dir, self.log_dir):
            shutil.rmtree(folder, ignore_errors=True)
        self.password_file.unlink(missing_ok=True)
        (self.home / "postgres.log").unlink(missing_ok=True)  # where earlier versions logged
        return self.up(seed=seed)

    def check_major(self) -> None:
        """Refuse, in one line, a cluster made by another major version than the project runs."""
        made_by = data_major(self.data_dir)
        if made_by is not None and made_by != self.major:
            raise ConfigError(
                f"the local cluster in {self.home} is PostgreSQL {made_by}, and the project runs {self.major} "
                "(postgresMajor in Pulumi.local.yaml, or APPDB_PG_MAJOR): 'bin/appdb local reset' makes a new one "
                f"(this wipes it), or set postgresMajor back to {made_by}"
            )

    def check_home(self, changes: bool = True) -> None:
        """Refuse, in one line, a folder that is no folder, or (``changes``: for ``up`` and ``reset``)
        one that someone else could change under us.

        ``local up`` makes folders in ``home`` and (as root) gives them to the server's OS
        user: a user who may write in ``home``, or rename in a folder above it, could point
        that at a folder of root's. So ``home``, if it is there, must be a real folder of ours
        that no one else may write to; every folder above it ours or root's, and writable by
        others only when sticky (``/tmp``). Writable by a group counts as by others unless the
        group is its owner's alone (a user private group: umask 002 makes 0775 folders). And its
        name must be free of what ``pg_ctl``'s shell reads. Reading a URL or stopping the server
        changes nothing there, so a cluster in a folder that fails the rest can still be stopped.
        """
        if any(char in str(self.home) for char in '"$`\n\r') or "\\\\" in str(self.home):
            raise ConfigError(f"the local database's folder {self.home!s} holds a character pg_ctl passes through "
                              "a shell ($, `, \", two backslashes or a line break): choose another APPDB_LOCAL_HOME")
        try:
            info = os.lstat(self.home)
        except FileNotFoundError:
            info = None
        except OSError as exc:
            raise ConfigError(f"cannot look at the local database's folder {self.home} ({exc.strerror}): "
                              "choose another APPDB_LOCAL_HOME") from None
        if info is not None and stat.S_ISLNK(info.st_mode):
            raise ConfigError(f"the local database's folder {self.home} is a link: point APPDB_LOCAL_HOME "
                              f"(or --home) at the folder itself ({self.home.resolve()})")
        if info is not None and not stat.S_ISDIR(info.st_mode):
            raise ConfigError(f"the local database's folder {self.home} is not a folder: point APPDB_LOCAL_HOME "
                              "(or --home) at a folder, or at a path where one can be made")
        if not changes:
            return
        uid = os.geteuid()
        if info is not None:
            # As root, a folder of the server's OS user too: clusters made by earlier versions gave it theirs.
            account = server_account()
            owners = {uid} if account is None else {uid, account.pw_uid}
            shared = _writable_by_others(info)
            if info.st_uid not in owners or shared:
                raise ConfigError(
                    f"the local database's folder {self.home} belongs to {_owner(info.st_uid)}"
                    f"{' and others may write to it' if shared else ''}: use a folder of your "
                    "own that only you may write to (APPDB_LOCAL_HOME)")
        for folder in _folders_above(self.home):
            above = folder.stat()
            shared = _writable_by_others(above) and not above.st_mode & stat.S_ISVTX
            if above.st_uid not in (uid, 0) or shared:
                raise ConfigError(
                    f"{folder}, above the local database's folder {self.home}, "
                    f"{'belongs to ' + _owner(above.st_uid) if above.st_uid not in (uid, 0) else 'may be written by others'}"
                    ", who could swap what is in it: keep the local database under folders only you or root may "
                    "change (APPDB_LOCAL_HOME)")

    def check_reachable(self) -> None:
        """As root, refuse (in one line that says what to do) when the server's OS user cannot reach ``home``."""
        self.check_home()
        account = server_account()
        if account is None:
            return
        blocked = blocked_folder(self.home, account)
        if blocked:
            folder, mode = blocked
            raise ConfigError(
                f"the {account.pw_name} OS user cannot enter {folder} (mode {mode:04o}), on the way to the local "
                f"cluster's folder {self.home}; move the checkout under a folder it can enter, "
                "or export APPDB_LOCAL_HOME as one, for this and every later command (e.g. export "
                "APPDB_LOCAL_HOME=/srv/appdb-local)"
            )

    # --- passwords -----------------------------------------------------------------

    def password(self, role: str = LOGIN) -> str:
        """``role``'s password, from the cluster's password file."""
        passwords = read_password_file(self.password_file)
        if role not in passwords:
            raise ConfigError(f"{self.password_file} has no password for {role}: start over with 'bin/appdb local reset'")
        return passwords[role]

    def set_password(self, conn: psycopg.Connection, role: str) -> None:
        """Give ``role`` its password from the file, sent as a SCRAM verifier: the text never reaches the server or its log."""
        verifier = conn.pgconn.encrypt_password(self.password(role).encode(), role.encode(), b"scram-sha-256")
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(verifier.decode())))

    def _ensure_password_file(self) -> None:
        if not self.password_file.exists():
            write_password_file(self.password_file, {role: new_password() for role in ROLES})

    def _write_hba(self) -> None:
        """Our pg_hba.conf, in place of initdb's (which lets the superuser in over TCP) or an earlier version's."""
        _write_server_file(self.data_dir / "pg_hba.conf", pg_hba(), server_account())

    def _replace_old_passwords(self) -> bool:
        """A cluster made with an earlier version's fixed passwords gets the file's random ones, once.

        Nothing else about it changes, so an existing local database and its data carry
        over; app_backend's changes too when it exists (the next ``pulumi up --stack local``
        sets the same one, from the file).
        """
        try:
            self.connect(user=SUPERUSER).close()
            return False
        except psycopg.OperationalError as exc:
            if not _authentication_failed(exc):
                raise
        for old in OLD_PASSWORDS:
            try:
                conn = psycopg.connect(self.dsn(user=SUPERUSER), password=old, autocommit=True, connect_timeout=10)
            except psycopg.OperationalError as exc:
                if _authentication_failed(exc):
                    continue
                raise
            with conn:
                existing = {row[0] for row in conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)",
                                                           (list(ROLES),))}
                for role in ROLES:
                    if role in existing:
                        self.set_password(conn, role)
            log.info("the local database's fixed passwords were replaced by the ones in %s", self.password_file)
            return True
        raise ConfigError(
            f"the local database in {self.home} refuses the passwords in {self.password_file}: start a new one "
            "with 'bin/appdb local reset' (this wipes it)"
        )

    def _wait_for_reload(self, asked: float) -> None:
        """Wait (up to 10 s) until new connections run with what a reload asked at ``asked`` read.

        The server reloads on a signal, after pg_ctl returns; each new connection reports
        the time its configuration was loaded.
        """
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with self.connect(user=SUPERUSER) as conn:
                loaded = conn.execute("SELECT extract(epoch FROM pg_conf_load_time())").fetchone()[0]
            if float(loaded) >= asked:
                return
            time.sleep(0.05)

    # --- shape ---------------------------------------------------------------------

    def shape(self, dbname: str, seed: bool = False) -> None:
        """Apply the Supabase shape to one database and give the ``postgres`` login its password."""
        with self.connect(dbname, user=SUPERUSER) as conn:
            conn.execute(_package_sql("supabase_shape.sql"))
            self.set_password(conn, LOGIN)
            if seed:
                conn.execute(_package_sql("supabase_seed.sql"))

    # --- connecting ----------------------------------------------------------------

    def params(self, dbname: str = "postgres", user: str = LOGIN, tcp: bool = False) -> dict[str, str]:
        """libpq parameters; they name the password file instead of holding a password."""
        host = self.listen if tcp else str(self.socket_dir)
        return {"host": host, "port": str(self.port), "dbname": dbname, "user": user,
                "passfile": str(self.password_file)}

    def dsn(self, dbname: str = "postgres", user: str = LOGIN, tcp: bool = False) -> str:
        return conninfo.make_conninfo(**self.params(dbname, user, tcp))

    def url(self, dbname: str = "postgres") -> str:
        """The URL of the ``postgres`` login, password included: the form Supabase's CLI prints for its local stack."""
        return f"postgresql://{LOGIN}:{self.password()}@{self.listen}:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres", user: str = LOGIN) -> psycopg.Connection:
        """A connection through the socket (the superuser's only way in). In UTF-8 whatever
        PGCLIENTENCODING says, as appdb/connection.py's: the runner builds throwaway databases
        through it, and its files go to the server as the lexer read them."""
        return psycopg.connect(self.dsn(dbname, user), autocommit=True, connect_timeout=10, client_encoding="UTF8")

    # --- running the server programs -------------------------------------------------

    def _run_server_tool(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        # An existing cluster is run by the programs of the major that made it (a `reset`
        # stops a cluster of another major before making the new one).
        command = [str(find_bindir(data_major(self.data_dir) or self.major) / tool), *args]
        account = server_account()
        kwargs: dict = {"capture_output": True, "text": True, "check": False, "cwd": "/",
                        "env": _server_environment(account)}
        if account is not None:
            kwargs.update(user=account.pw_uid, group=account.pw_gid, extra_groups=[])
        result = subprocess.run(command, **kwargs)
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise AppdbError(f"{tool} failed: {detail[-1] if detail else 'exit ' + str(result.returncode)}")
        return result


def _authentication_failed(exc: psycopg.OperationalError) -> bool:
    return "password authentication failed" in str(exc)
