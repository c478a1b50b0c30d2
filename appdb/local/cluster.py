"""The local database: a PostgreSQL cluster owned by the project, shaped like Supabase.

``appdb local up`` runs it from ``.appdb/local`` (git-ignored) on 127.0.0.1:54322, the
port Supabase's CLI uses, and the tests start a throwaway one the same way. The
cluster's bootstrap superuser is ``supabase_admin``; the ``postgres`` login that
deploys is not a superuser, exactly as on Supabase, so permission problems show up
here first.

PostgreSQL refuses to run as root, so when we are root the server programs run as the
``postgres`` OS user and the cluster's folder is handed to it.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import psycopg
from psycopg import conninfo, sql

from appdb.errors import AppdbError, ConfigError

log = logging.getLogger(__name__)

DEFAULT_HOME = Path(".appdb/local")
DEFAULT_PORT = 54322
SUPERUSER = "supabase_admin"
LOGIN = "postgres"
# The local cluster's password, for supabase_admin and the postgres login. It guards
# nothing (the cluster listens on loopback only), but it is no word and no identifier:
# Pulumi masks every occurrence of a secret's text in what it prints, and a password
# like `postgres` turned `pulumi-resource-postgresql` into `pulumi-resource-[secret]ql`.
LOCAL_PASSWORD = "Qm7x-Vt3k-Rw9p-Hc2d"
# What clusters made before that used (Supabase's CLI's well-known one); `up` replaces it.
LEGACY_PASSWORD = "postgres"
SERVER_USER = "postgres"


def _package_sql(name: str) -> str:
    return resources.files("appdb.local").joinpath(name).read_text(encoding="utf-8")


def find_bindir() -> Path:
    """Where initdb and pg_ctl live: PATH first, then ``pg_config --bindir``, then Debian's layout."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidate = Path(out.stdout.strip())
        if out.returncode == 0 and (candidate / "initdb").exists():
            return candidate
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if versions:
        return versions[-1].parent
    raise ConfigError(
        "PostgreSQL server programs (initdb, pg_ctl) not found: install them "
        "(Debian: apt-get install postgresql-15) or put their folder on PATH"
    )


@dataclass
class Cluster:
    """One PostgreSQL cluster in ``home``: data/, run/ (the socket) and postgres.log."""

    home: Path = DEFAULT_HOME
    port: int = DEFAULT_PORT
    listen: str = "127.0.0.1"
    settings: dict[str, str] = field(default_factory=dict)
    password: str = LOCAL_PASSWORD

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def socket_dir(self) -> Path:
        return self.home / "run"

    @property
    def logfile(self) -> Path:
        return self.home / "postgres.log"

    # --- lifecycle -----------------------------------------------------------------

    def is_initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def is_running(self) -> bool:
        if not self.is_initialised():
            return False
        result = self._run_server_tool("pg_ctl", "-D", str(self.data_dir), "status", check=False)
        return result.returncode == 0

    def up(self, seed: bool = False) -> None:
        """Initialise if needed, start if stopped, and (re)apply the Supabase shape."""
        if not self.is_initialised():
            self.init()
        if not self.is_running():
            self.start()
        self._replace_legacy_password()
        self.shape("postgres", seed=seed)

    def init(self) -> None:
        self.home = self.home.absolute()
        self.home.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        pwfile = self.home / ".pwfile"
        pwfile.write_text(self.password + "\n")
        self._hand_to_server_user()
        try:
            self._run_server_tool(
                "initdb", "-D", str(self.data_dir), "-U", SUPERUSER, f"--pwfile={pwfile}",
                "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-instructions",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        conf = {
            "port": str(self.port),
            "listen_addresses": f"'{self.listen}'",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "password_encryption": "'scram-sha-256'",
            **self.settings,
        }
        with (self.data_dir / "postgresql.conf").open("a") as handle:
            handle.write("\n# appdb local\n")
            handle.writelines(f"{key} = {value}\n" for key, value in conf.items())

    def start(self) -> None:
        result = self._run_server_tool(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.logfile), "-w", "-t", "60", "start", check=False
        )
        if result.returncode != 0:
            raise AppdbError(
                f"the local PostgreSQL did not start (is port {self.port} in use?): see {self.logfile}"
            )
        log.info("local PostgreSQL started on %s:%s", self.listen, self.port)

    def down(self) -> None:
        if self.is_running():
            self._run_server_tool("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")

    def reset(self, seed: bool = False) -> None:
        """A brand-new cluster: everything, roles included, is as after the first ``up``."""
        self.down()
        shutil.rmtree(self.home, ignore_errors=True)
        self.up(seed=seed)

    # --- shape ---------------------------------------------------------------------

    def shape(self, dbname: str, seed: bool = False) -> None:
        """Apply the Supabase shape to one database and set the ``postgres`` login's password."""
        with self.connect(dbname, user=SUPERUSER) as conn:
            conn.execute(_package_sql("supabase_shape.sql"))
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(LOGIN), sql.Literal(self.password)))
            if seed:
                conn.execute(_package_sql("supabase_seed.sql"))

    def _replace_legacy_password(self) -> None:
        """A cluster made with the old well-known password gets the current one, once.

        Nothing else about it changes, so an existing local database and its data carry
        over; the local stack then updates app_backend's password on its next ``up``.
        """
        try:
            self.connect(user=SUPERUSER).close()
            return
        except psycopg.OperationalError as exc:
            if "password authentication failed" not in str(exc):
                raise
        try:
            conn = psycopg.connect(conninfo.make_conninfo(**{**self.params(user=SUPERUSER), "password": LEGACY_PASSWORD}),
                                   autocommit=True, connect_timeout=10)
        except psycopg.OperationalError:
            raise ConfigError(
                f"the local database in {self.home} refuses its password: start a new one with "
                "'appdb local reset' (this wipes it)"
            ) from None
        with conn:
            for role in (SUPERUSER, LOGIN):
                conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(self.password)))
        log.warning("the local database had the old password %r; it now has the one 'appdb local url' prints",
                    LEGACY_PASSWORD)

    # --- connecting ----------------------------------------------------------------

    def params(self, dbname: str = "postgres", user: str = LOGIN, tcp: bool = False) -> dict[str, str]:
        host = self.listen if tcp else str(self.socket_dir.absolute())
        return {"host": host, "port": str(self.port), "dbname": dbname, "user": user, "password": self.password}

    def dsn(self, dbname: str = "postgres", user: str = LOGIN, tcp: bool = False) -> str:
        return conninfo.make_conninfo(**self.params(dbname, user, tcp))

    def url(self, dbname: str = "postgres") -> str:
        """The URL of the ``postgres`` login, the form Supabase's CLI prints for its local stack."""
        return f"postgresql://{LOGIN}:{self.password}@{self.listen}:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres", user: str = LOGIN) -> psycopg.Connection:
        return psycopg.connect(self.dsn(dbname, user), autocommit=True, connect_timeout=10)

    # --- running the server programs -------------------------------------------------

    def _run_server_tool(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(find_bindir() / tool), *args]
        kwargs: dict = {"capture_output": True, "text": True, "check": False, "cwd": "/"}
        if os.geteuid() == 0:
            account = pwd.getpwnam(SERVER_USER)
            kwargs.update(user=account.pw_uid, group=account.pw_gid, extra_groups=[])
            kwargs["env"] = {**os.environ, "HOME": account.pw_dir}
        result = subprocess.run(command, **kwargs)
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise AppdbError(f"{tool} failed: {detail[-1] if detail else 'exit ' + str(result.returncode)}")
        return result

    def _hand_to_server_user(self) -> None:
        """As root, give the cluster's folder to the ``postgres`` OS user, which runs the server."""
        if os.geteuid() != 0:
            return
        try:
            account = pwd.getpwnam(SERVER_USER)
        except KeyError as exc:
            raise ConfigError(
                "running as root, but there is no 'postgres' OS user to run the server: "
                "install the postgresql package or run as an ordinary user"
            ) from exc
        for path in [self.home, *self.home.rglob("*")]:
            os.chown(path, account.pw_uid, account.pw_gid)
        _make_traversable(self.home, account.pw_uid)


def _make_traversable(path: Path, uid: int) -> None:
    """Let the server user reach ``path``: every parent it cannot enter gets o+x."""
    for parent in path.absolute().parents:
        mode = parent.stat().st_mode
        if parent.stat().st_uid != uid and not mode & 0o001:
            os.chmod(parent, mode | 0o001)
