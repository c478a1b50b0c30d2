"""Connecting: where the DSN comes from, what is refused, and how failures read.

The DSN comes from ``--dsn``, else ``DATABASE_URL``, else libpq's own ``PG*``
variables (an empty conninfo lets libpq read them). A password never reaches a
message: every error passes through :func:`redact`, after dbmate's redactLogString.
"""

from __future__ import annotations

import logging
import os
import re

import psycopg
from psycopg import conninfo

from appdb.errors import ConfigError, ConnectError

log = logging.getLogger(__name__)

TRANSACTION_POOLER_PORT = 6543
DEFAULT_CONNECT_TIMEOUT = 10

_URL_PASSWORD = re.compile(r"(://[^/:@\s]*:)[^@\s]*@")
_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact(text: str) -> str:
    """The text with every password in a URL or key=value DSN replaced by ********."""
    text = _URL_PASSWORD.sub(r"\1********@", text)
    return _KV_PASSWORD.sub(r"\1********", text)


def resolve_dsn(explicit: str | None) -> str:
    """The conninfo to use: --dsn, then DATABASE_URL, then '' (libpq reads PG*)."""
    if explicit:
        return explicit
    return os.environ.get("DATABASE_URL", "")


def connection_params(dsn: str) -> dict[str, str]:
    """The DSN parsed and checked, with the environment's PG* values filled in by libpq."""
    try:
        params = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"malformed connection string: {redact(str(exc).splitlines()[0])}") from None
    port = str(params.get("port") or os.environ.get("PGPORT") or "")
    if any(p.strip() and not p.strip().isdigit() for p in port.split(",")):
        raise ConfigError(f"malformed connection string: port {port!r} is not a number")
    if any(p.strip() == str(TRANSACTION_POOLER_PORT) for p in port.split(",")):
        raise ConfigError(
            "port 6543 is Supabase's transaction pooler, which breaks session settings and advisory "
            "locks: use the direct connection (port 5432) or the session pooler"
        )
    if "connect_timeout" not in params and not os.environ.get("PGCONNECT_TIMEOUT"):
        params["connect_timeout"] = str(DEFAULT_CONNECT_TIMEOUT)
    return params


def describe(params: dict[str, str]) -> str:
    """user@host:port/db for messages, without the password."""
    host = params.get("host") or os.environ.get("PGHOST") or "localhost"
    port = params.get("port") or os.environ.get("PGPORT") or "5432"
    user = params.get("user") or os.environ.get("PGUSER") or _os_user()
    db = params.get("dbname") or os.environ.get("PGDATABASE") or user
    return f"{user}@{host}:{port}/{db}"


def where(conn: psycopg.Connection) -> str:
    """user@host:port/dbname: which database a message is about, never with the password."""
    info = conn.info
    return f"{info.user}@{info.host}:{info.port}/{info.dbname}"


def connect(dsn: str | None, application_name: str = "appdb") -> psycopg.Connection:
    """An autocommit connection whose server notices go to the logger."""
    params = connection_params(resolve_dsn(dsn))
    params.setdefault("application_name", application_name)
    try:
        conn = psycopg.connect(conninfo.make_conninfo(**params), autocommit=True)
    except psycopg.OperationalError as exc:
        raise ConnectError(_connect_failure(exc, params)) from None
    conn.add_notice_handler(_log_notice)
    return conn


def _connect_failure(exc: psycopg.OperationalError, params: dict[str, str]) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = redact(" ".join(lines))
    where = describe(params)
    if "password authentication failed" in text or "no password supplied" in text:
        return f"authentication failed for {where}: check the user and password"
    if "timeout expired" in text:
        return (
            f"could not connect to {where}: no answer within "
            f"{params.get('connect_timeout') or os.environ.get('PGCONNECT_TIMEOUT')} s "
            "(connect_timeout); check the host, port and firewall"
        )
    reason = lines[-1] if lines else "unknown error"
    for line in lines:
        if "FATAL" in line or "refused" in line or "could not translate" in line:
            reason = line
            break
    return f"could not connect to {where}: {redact(reason)}"


def _os_user() -> str:
    """libpq's default user; getpass is imported only on this error path."""
    import getpass

    return getpass.getuser()


def _log_notice(diag: psycopg.errors.Diagnostic) -> None:
    log.info("server %s: %s", (diag.severity or "notice").lower(), diag.message_primary)
