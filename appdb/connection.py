"""Connecting: where the DSN comes from, what is refused, and how failures read.

The DSN comes from ``--dsn``, else ``DATABASE_URL``, else libpq's own ``PG*``
variables (an empty conninfo lets libpq read them). A password never reaches a
message or a command line:

* a DSN libpq cannot parse gets a fixed message naming the kind of problem, never
  libpq's own text, which quotes what it choked on;
* values libpq would echo back (port, connect_timeout, sslmode) are checked first,
  and the message names the parameter, not the value;
* a URL whose password was not percent-encoded (an ``@`` or ``/`` in it) is refused
  before anything connects, since libpq would read part of the password as the host;
* messages are built from our own fields (user@host:port/db), and any text from libpq
  or the server passes through :func:`appdb.redact.redact` with every secret we know.

Supabase's transaction pooler is refused twice: by the port asked for, before
connecting, and by the port actually reached (a service file, PGSERVICE), right after.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Callable

import psycopg
from psycopg import conninfo, pq

from appdb.access import TRANSACTION_POOLER_PORT
from appdb.errors import ConfigError, ConnectError
from appdb.libpq import DEFAULT_CONNECT_TIMEOUT, SSLMODES
from appdb.redact import SECRET_KEYWORDS, environment_secrets, passfile_secrets, secrets_in
from appdb.redact import redact as _redact

log = logging.getLogger(__name__)

_POOLER_MESSAGE = ("port 6543 is Supabase's transaction pooler, which breaks session settings and advisory "
                   "locks: use the direct connection (port 5432) or the session pooler")
_NOT_SHOWN = "(the text is not shown: it may hold a password)"
_ENCODE_HINT = ("percent-encode the password in a URL (@ as %40, / as %2F, % as %25, a space as %20), "
                "or, in key=value form, put it in single quotes ('a b')")
# What libpq's parse errors are about, by a phrase of their text; the text itself is never shown.
_PARSE_PROBLEMS = (
    ("unexpected spaces", "a space in a URL (write it as %20)"),
    ("percent-encod", "invalid percent-encoding (a % must start %XX; write % itself as %25)"),
    ("unterminated quoted string", "an unterminated quote"),
    ('missing "="', "a value with a space that is not quoted (write key='a b')"),
    ("invalid connection option", "an unknown parameter name"),
    ("invalid URI query parameter", "an unknown parameter name"),
    ("IPv6", "an unterminated [IPv6] host"),
)
_INTEGER_KEYWORDS = ("connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval",
                     "keepalives_count", "tcp_user_timeout")
_ENVIRONMENT = {"port": "PGPORT", "connect_timeout": "PGCONNECT_TIMEOUT", "sslmode": "PGSSLMODE"}


def redact(text: str, dsn: str | None = None) -> str:
    """``text`` without any password: those of ``dsn`` and the environment, and any URL/key=value one."""
    return _redact(text, known_secrets(dsn))


def known_secrets(dsn: str | None = None) -> set[str]:
    """Every secret a message about this DSN could contain: raw, parsed, from the environment, and
    those libpq may read from files: the service's entry and the password file."""
    found = environment_secrets()
    for text in (dsn, os.environ.get("DATABASE_URL")):
        if text:
            found |= dsn_secrets(text)
    return found | file_secrets(resolve_dsn(dsn))


def file_secrets(dsn: str) -> set[str]:
    """The passwords libpq may take from files for this DSN: its service's entry (PGSERVICE, or
    ``service=``) and every line of the password file (``passfile``, PGPASSFILE, ``~/.pgpass``)."""
    try:
        params = conninfo.conninfo_to_dict(dsn) if dsn else {}
    except (psycopg.Error, UnicodeError):
        params = {}
    service = service_entry(params) or {}
    found = {service[key] for key in SECRET_KEYWORDS if service.get(key)}
    passfile = (params.get("passfile") or service.get("passfile") or os.environ.get("PGPASSFILE")
                or os.path.expanduser("~/.pgpass"))
    return found | passfile_secrets(passfile)


def dsn_secrets(dsn: str) -> set[str]:
    """The secrets written in a DSN, raw and parsed."""
    found = secrets_in(dsn)
    try:
        parsed = conninfo.conninfo_to_dict(dsn)
    except (psycopg.Error, UnicodeError):
        return found
    return found | {parsed[key] for key in SECRET_KEYWORDS if parsed.get(key)}


def resolve_dsn(explicit: str | None) -> str:
    """The conninfo to use: --dsn, then DATABASE_URL, then '' (libpq reads PG*)."""
    if explicit:
        return explicit
    return os.environ.get("DATABASE_URL", "")


def connection_params(dsn: str) -> dict[str, str]:
    """The DSN parsed and checked, with a connect_timeout; libpq fills in the PG* variables later."""
    params = _parse(dsn)
    if _is_url(dsn):
        _check_url_split(params)
    _check_values(params)
    port = _setting(params, "port")
    if any(p.strip() == str(TRANSACTION_POOLER_PORT) for p in port.split(",")):
        raise ConfigError(_POOLER_MESSAGE)
    if "connect_timeout" not in params and not os.environ.get("PGCONNECT_TIMEOUT"):
        params["connect_timeout"] = str(DEFAULT_CONNECT_TIMEOUT)
    return params


def _parse(dsn: str) -> dict[str, str]:
    """libpq's parse, its error reduced to a fixed sentence: libpq quotes the text it chokes on."""
    try:
        dsn.encode("utf-8")
    except UnicodeError:
        raise ConfigError(f"malformed connection string: it is not valid UTF-8 {_NOT_SHOWN}") from None
    try:
        return conninfo.conninfo_to_dict(dsn)
    except UnicodeError:  # a percent-encoded byte that is no UTF-8 text (%FF), in any part of it
        raise ConfigError(f"malformed connection string: a percent-encoded value is not UTF-8 text {_NOT_SHOWN}; "
                          "encode each character as its UTF-8 bytes (é as %C3%A9)") from None
    except psycopg.Error as exc:
        text = str(exc)
        problem = next((kind for phrase, kind in _PARSE_PROBLEMS if phrase in text), "libpq could not parse it")
        raise ConfigError(f"malformed connection string: {problem}; check quoting and percent-encoding "
                          f"{_NOT_SHOWN}") from None


def _setting(params: dict[str, str], key: str) -> str:
    """A parameter as libpq will use it: the DSN's, else its PG* variable."""
    value = params.get(key)
    if value is None and key in _ENVIRONMENT:
        value = os.environ.get(_ENVIRONMENT[key])
    return str(value or "")


def _check_values(params: dict[str, str]) -> None:
    """Values libpq or psycopg would quote back in an error are checked here, and only named."""
    ports = [p.strip() for p in _setting(params, "port").split(",")]
    if any(p and not (p.isascii() and p.isdigit() and 0 < int(p) < 65536) for p in ports):
        raise ConfigError(f"malformed connection string: port must be a number from 1 to 65535 {_NOT_SHOWN}; "
                          + _ENCODE_HINT)
    for key in _INTEGER_KEYWORDS:
        if not re.fullmatch(r"\s*(-?\d+\s*)?", _setting(params, key)):
            raise ConfigError(f"malformed connection string: {key} must be a whole number {_NOT_SHOWN}")
    sslmode = _setting(params, "sslmode")
    if sslmode and sslmode not in SSLMODES:
        raise ConfigError(f"malformed connection string: sslmode must be one of {', '.join(SSLMODES)} {_NOT_SHOWN}")


def _is_url(dsn: str) -> bool:
    return dsn.lstrip().startswith(("postgresql://", "postgres://"))


def _check_url_split(params: dict[str, str]) -> None:
    """An ``@`` left in the host, login or database means libpq split an unencoded password."""
    if any("@" in params.get(key, "") for key in ("host", "user", "dbname", "hostaddr")):
        raise ConfigError(f"malformed connection string: an '@' outside user:password@ in a URL {_NOT_SHOWN}; "
                          + _ENCODE_HINT)


def describe(params: dict[str, str]) -> str:
    """user@host:port/db for messages, without the password: as libpq takes them, from the DSN,
    the connection service's entry, then the environment."""
    service = service_entry(params) or {}

    def value(key: str, variable: str) -> str | None:
        return params.get(key) or service.get(key) or os.environ.get(variable)

    host = value("host", "PGHOST") or "localhost"
    port = value("port", "PGPORT") or "5432"
    user = value("user", "PGUSER") or _os_user()
    db = value("dbname", "PGDATABASE") or user
    return f"{user}@{host}:{port}/{db}"


def where(conn: psycopg.Connection) -> str:
    """user@host:port/dbname: which database a message is about, never with the password."""
    info = conn.info
    return f"{info.user}@{info.host}:{info.port}/{info.dbname}"


def connect(dsn: str | None, application_name: str = "appdb") -> psycopg.Connection:
    """An autocommit connection whose server notices go to the logger, never to the transaction pooler."""
    raw = resolve_dsn(dsn)
    params = connection_params(raw)
    params.setdefault("application_name", application_name)
    # The files are read, and lexed, as UTF-8 text; the session's encoding is how that text goes to
    # the server, whatever the DSN or PGCLIENTENCODING say. In another one a character could be
    # sent as a byte the server reads otherwise (EUC_JP's yen sign is a backslash): a string the
    # lexer saw closed would be open, and a COMMIT inside it would run. Every step checks it is kept.
    params["client_encoding"] = "UTF8"
    scram_only_on_this_machine(params)
    try:
        conn = psycopg.connect(conninfo.make_conninfo(**params), autocommit=True)
    except psycopg.OperationalError as exc:
        raise ConnectError(redact(_connect_failure(exc, params), raw)) from None
    except psycopg.ProgrammingError:
        raise ConfigError(f"malformed connection string: libpq refused a parameter {_NOT_SHOWN}") from None
    refuse_transaction_pooler(conn)
    # Read when a notice is logged, not at every connect: known_secrets reads the password file.
    secrets = functools.cache(lambda: known_secrets(raw))
    conn.add_notice_handler(lambda diag: _log_notice(diag, secrets))
    # No statement of psycopg's own is prepared on the server: the runner deallocates every one
    # between migrations (a migration's PREPARE must not reach the next), and appdb runs each
    # query a handful of times at most.
    conn.prepare_threshold = None
    # Every transaction appdb opens reads committed data afresh at each statement, whatever the
    # login's or database's default_transaction_isolation: a data-loss guard counts after the lock
    # its step took first (appdb/migrate/steps.py, lock_first); a snapshot from before it would
    # miss a row committed while the lock waited, and the drop would take that row.
    conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
    return conn


def scram_only_on_this_machine(params: dict[str, str], libpq_major: int | None = None) -> None:
    """Over TCP to this machine, libpq answers only a SCRAM exchange (``require_auth``, libpq 16+),
    which never gives the password away: a port there may be held by any user of the machine (a
    stopped local database's, taken over), and a program on it could otherwise ask for the
    password in clear. Any host of this machine counts, from the DSN, the service's entry
    (``service=``, PGSERVICE) or PGHOST/PGHOSTADDR, in libpq's order, however it is written
    (:func:`_this_machine`); a service whose entry is in neither file appdb can read (libpq's own
    default folder) counts as this machine. Left as it is when the DSN, the service's entry or
    PGREQUIREAUTH says otherwise.
    ``libpq_major``: the libpq that connects, when it is not psycopg's (pg_dump's, ``appdb pull``)."""
    major = pq.version() // 10000 if libpq_major is None else libpq_major
    if "require_auth" in params or os.environ.get("PGREQUIREAUTH") or major < 16:
        return
    service = service_entry(params)
    if service is not None and "require_auth" in service:
        return
    hosts = ",".join(params.get(key) or (service or {}).get(key) or os.environ.get(variable) or ""
                     for key, variable in (("host", "PGHOST"), ("hostaddr", "PGHOSTADDR")))
    if service == {} or any(_this_machine(host) for host in hosts.split(",")):
        params["require_auth"] = "scram-sha-256"


def service_entry(params: dict[str, str]) -> dict[str, str] | None:
    """The connection service's entry, as libpq finds it: None without a service; {} when it is in
    neither the user's file (PGSERVICEFILE, else ~/.pg_service.conf) nor PGSYSCONFDIR's
    pg_service.conf (libpq may still find it in the folder it was built with)."""
    name = params.get("service") or os.environ.get("PGSERVICE")
    if not name:
        return None
    user_file = os.environ.get("PGSERVICEFILE") or os.path.expanduser("~/.pg_service.conf")
    system = os.environ.get("PGSYSCONFDIR")
    for path in (user_file, *([os.path.join(system, "pg_service.conf")] if system else [])):
        entry = _read_service(path, name)
        if entry is not None:
            return entry or {"service": name}
    return {}


def _read_service(path: str, name: str) -> dict[str, str] | None:
    """``name``'s ``key=value`` lines in a pg_service.conf (libpq's format), or None if it has none."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    entry: dict[str, str] | None = None
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            if entry is not None:
                break
            entry = {} if line.rstrip("]")[1:] == name else None
        elif entry is not None and "=" in line:
            key, _, value = line.partition("=")
            entry[key.strip()] = value.strip()
    return entry


def _this_machine(host: str) -> bool:
    """Whether TCP to ``host`` reaches this machine: ``localhost`` (and ``*.localhost``); an address
    of it, in any form (127.0.0.0/8 as inet_aton takes it, ``127.1``; ``::1``; 0.0.0.0; an IPv4
    address mapped into IPv6, ``::ffff:127.0.0.1``; an interface's own address, a link-local one
    with its scope); or a name that resolves to one (the machine's own name, which Debian's
    /etc/hosts maps to 127.0.1.1). A Unix socket's folder is not TCP. A name that does not resolve
    is not this machine: libpq will say so."""
    import socket

    host = host.strip().lower().rstrip(".")
    if not host or host.startswith(("/", "@")):
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return _is_local_address(socket.AF_INET, (socket.inet_ntoa(socket.inet_aton(host)), 0))  # 127.1, 2130706433
    except OSError:
        pass
    try:
        found = socket.getaddrinfo(host, 0, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    return any(_is_local_address(family, address) for family, _, _, _, address in found)


def _is_local_address(family: int, address: tuple) -> bool:
    """Loopback, unspecified, or an address this machine can bind (one of its interfaces', a
    link-local one on the interface its scope names): ``address`` as getaddrinfo gives it."""
    import ipaddress
    import socket

    try:
        ip = ipaddress.ip_address(str(address[0]).partition("%")[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        ip, family, address = mapped, socket.AF_INET, (str(mapped), 0)
    if ip.is_loopback or ip.is_unspecified:
        return True
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind(address)  # refused (EADDRNOTAVAIL) for another machine's address
        return True
    except OSError:
        return False


def refuse_transaction_pooler(conn: psycopg.Connection) -> None:
    """Close and refuse a connection that reached port 6543 however it was asked for (service file, PG*)."""
    if conn.info.port == TRANSACTION_POOLER_PORT:
        conn.close()
        raise ConfigError(_POOLER_MESSAGE)


# libpq's complaints about a value, which quote the value: only the keyword is kept.
_VALUE_ERROR = re.compile(r'invalid (?:(\w+) )?(?:integer )?value.*?(?:for connection option "(\w+)")?$')


def _connect_failure(exc: psycopg.OperationalError, params: dict[str, str]) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = " ".join(lines)
    where = describe(params)
    if "password authentication failed" in text or "no password supplied" in text:
        return f"authentication failed for {where}: check the user and password"
    if "authentication method requirement" in text:
        return (f"could not connect to {where}: it asked for the password other than by SCRAM (or not at all), which appdb "
                "answers on this machine only (another user's program may hold that port); if the server is "
                "yours and uses another method, name it in the connection string (require_auth=...)")
    if "timeout expired" in text:
        return (
            f"could not connect to {where}: no answer within "
            f"{params.get('connect_timeout') or os.environ.get('PGCONNECT_TIMEOUT')} s "
            "(connect_timeout); check the host, port and firewall"
        )
    tls = next((line for line in lines if "SSL error" in line or "certificate" in line), None)
    if tls:
        return (f"could not connect to {where}: TLS: {tls.split(' failed: ')[-1]}; the server's certificate must be "
                "signed by the root certificate in sslrootcert (PGSSLROOTCERT; the stack's sslRootCert) and, "
                "with verify-full, name the host")
    value = _VALUE_ERROR.search(text)
    if value:
        named = next((k for k in value.groups() if k in _keywords()), "a parameter")
        return f"malformed connection string: libpq refused the value of {named} {_NOT_SHOWN}"
    if "server closed the connection unexpectedly" in text:
        return (f"could not connect to {where}: the server closed the connection unexpectedly (it may have "
                "stopped, or what listens on that port is no PostgreSQL)")
    reason = lines[-1] if lines else "unknown error"
    for line in lines:
        if "FATAL" in line or "refused" in line or "could not translate" in line:
            reason = line
            break
    return f"could not connect to {where}: {reason}"


def _keywords() -> set[str]:
    """libpq's own connection keywords: only these are safe to name in a message."""
    return {option.keyword.decode() for option in pq.Conninfo.get_defaults()}


def _os_user() -> str:
    """libpq's default user; getpass is imported only on this error path."""
    import getpass

    return getpass.getuser()


def _log_notice(diag: psycopg.errors.Diagnostic, secrets: Callable[[], set[str]]) -> None:
    """A server notice, for -v: redacted as every other line is (a migration may RAISE NOTICE anything);
    without -v, nothing is redacted for nobody."""
    if log.isEnabledFor(logging.INFO):
        log.info("server %s: %s", (diag.severity or "notice").lower(),
                 _redact(diag.message_primary or "", secrets(), pieces=False))
