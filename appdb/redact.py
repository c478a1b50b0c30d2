"""Keeping passwords out of every message, whatever form the connection string has.

Two layers, because text from libpq, the server or pg_dump can quote anything:

* every secret we can know of is collected (:func:`secrets_in` on each connection string
  and argument, ``PGPASSWORD``, the parsed ``password``/``sslpassword``, the service file's
  and the password file's), each also in its percent-decoded, percent-encoded and
  repr-escaped forms, and :func:`redact` masks each of them whole, and, in text made from
  the connection string (``pieces=True``: a failed connect), every run of 4 or more
  characters that also occurs in one of them, so a password cut in two by a mis-parse
  (``pa@ss-word`` read as password ``pa``, host ``ss-word@h``) is masked too. Not in text
  that others can write (a migration's error, a server notice, a lock holder's name): there
  the mask would show which of the pieces written into it are in the password, and a
  migration that raised every four-character group at once read the local password back
  from which of them came out masked;
* the URL and key=value patterns (after dbmate's redactLogString) mask a password we
  could not know of.

The rule for short secrets: a secret, or a piece of one, shorter than 4 characters is not
searched for, since masking every ``a`` would garble messages and a 3-character password
protects nothing. Messages are built from our own fields (user@host:port/db) rather than
echoing libpq's text, so a short password does not get there in the first place.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from urllib.parse import quote, unquote

MASK = "********"
# The shortest run of a secret that is masked anywhere in a message.
MIN_RUN = 4
# libpq's keywords whose values are secrets.
SECRET_KEYWORDS = ("password", "sslpassword", "oauth_client_secret", "scram_client_key", "scram_server_key")

_URL_PASSWORD = re.compile(r"(://[^/:@\s]*:)[^@\s]*@")
_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_KV_SECRET = re.compile(r"(?:%s)\s*=\s*" % "|".join(SECRET_KEYWORDS), re.IGNORECASE)
_KV_NEXT_KEY = re.compile(r"\s+[A-Za-z_]+\s*=")
_LOWER_HEX = re.compile(r"%[0-9A-F]{2}")  # a percent-encoding as some programs write it: %c3%a9
# A URL's query pairs, after any ? or & (generous: a raw ? in a password starts no query of libpq's).
_QUERY_PAIR = re.compile(r"[?&]([^=&?]*)=([^&]*)")


def secrets_in(text: str) -> set[str]:
    """Every string in ``text`` that may be a secret, read without libpq so a malformed DSN counts too.

    Generous on purpose: in a URL, everything between ``user:`` and the last ``@``; in
    key=value form, a quoted value up to its closing quote (or the end, when unterminated)
    and an unquoted one both up to the next space and up to the next ``key=``.
    """
    found: set[str] = set()
    scheme = text.find("://")
    if scheme >= 0:
        rest = text[scheme + 3:]
        at = rest.rfind("@")
        if at >= 0 and ":" in rest[:at]:
            found.add(rest[:at].split(":", 1)[1])
        found.update(_query_secrets(rest))
    for match in _KV_SECRET.finditer(text):
        value = text[match.end():]
        if value[:1] in ("'", '"'):
            end = re.search(r"(?<!\\)" + value[0], value[1:])
            found.add(value[1:end.start() + 1] if end else value[1:])
        else:
            found.add(re.split(r"\s", value, maxsplit=1)[0])
            following = _KV_NEXT_KEY.search(value)
            found.add(value[:following.start()] if following else value)
    return {secret for secret in found if secret}


def _query_secrets(rest: str) -> list[str]:
    """The values of a URL's secret query parameters, whose names libpq percent-decodes as it
    does their values: ``?%70assword=...`` sets the password too."""
    return [value for key, value in _QUERY_PAIR.findall(rest)
            if unquote(key, errors="surrogateescape").lower() in SECRET_KEYWORDS]


def passfile_secrets(path: str) -> set[str]:
    """Every password in a libpq password file (``host:port:db:user:password``, ``\\:`` and
    ``\\\\`` escaped): libpq may give any of them, so a message masks them all."""
    try:
        # As libpq: a regular file only (a FIFO would hold appdb at open), read whole.
        with open(path, "rb", opener=_regular_only) as handle:
            text = handle.read().decode("utf-8", "surrogateescape")
    except OSError:
        return set()
    found = set()
    for line in text.split("\n"):  # libpq's lines: a \n ends one, a \r before it is dropped
        line = line.removesuffix("\r")
        if line and not line.startswith("#"):  # a comment is a # in the first column
            fields = _passfile_fields(line)
            if len(fields) == 5 and fields[4]:
                found.add(fields[4])
    return found


def _regular_only(path: str, flags: int) -> int:
    """``open``'s opener: non-blocking, so that a FIFO does not wait for a writer, and refused
    unless what it opened is a regular file."""
    fd = os.open(path, flags | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise IsADirectoryError(path)  # an OSError: "not a file libpq would read"
    return fd


def _passfile_fields(line: str) -> list[str]:
    """A password file's line split as libpq's passwordFromFile reads it: fields end at a ``:``
    not escaped; a backslash takes the character after it, but a backslash at the very end of
    the line is kept; the password ends at its own unescaped ``:`` (what follows is ignored)."""
    fields, field, index = [], [], 0
    while index < len(line) and len(fields) < 5:
        char = line[index]
        if char == "\\" and index + 1 < len(line):
            field.append(line[index + 1])
            index += 2
            continue
        if char == ":":
            fields.append("".join(field))
            field = []
        else:
            field.append(char)
        index += 1
    if len(fields) < 5:
        fields.append("".join(field))
    return fields


def environment_secrets() -> set[str]:
    """The password libpq would take from the environment."""
    return {value for value in [os.environ.get("PGPASSWORD", "")] if value}


def forms(secrets: Iterable[str]) -> set[str]:
    """Each secret as written, percent-decoded, percent-encoded and escaped as repr() would."""
    out: set[str] = set()
    for secret in secrets:
        encoded = (quote(secret, safe="", errors="surrogateescape"), quote(secret, errors="surrogateescape"))
        for form in (secret, unquote(secret), *encoded, repr(secret)[1:-1],
                     *(_LOWER_HEX.sub(lambda m: m.group(0).lower(), e) for e in encoded)):
            out.add(form)
    return out


def redact(text: str, secrets: Iterable[str] = (), pieces: bool = True) -> str:
    """``text`` with every password pattern and every known secret masked; with ``pieces``, every
    run of 4+ characters of one too (only for text made from the connection string: see above)."""
    known = forms(secrets)
    text = _mask_runs(text, known) if pieces else _mask_whole(text, known)
    text = _URL_PASSWORD.sub(rf"\1{MASK}@", text)
    return _KV_PASSWORD.sub(rf"\1{MASK}", text)


def _mask_whole(text: str, secrets: set[str]) -> str:
    """Mask each occurrence of a secret of MIN_RUN or more characters, the longest first."""
    for secret in sorted((s for s in secrets if len(s) >= MIN_RUN), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def _mask_runs(text: str, secrets: set[str]) -> str:
    """Mask each stretch of ``text`` covered by a MIN_RUN-long piece of some secret."""
    pieces = {s[i:i + MIN_RUN] for s in secrets if len(s) >= MIN_RUN for i in range(len(s) - MIN_RUN + 1)}
    if not pieces:
        return text
    covered = [False] * len(text)
    for i in range(len(text) - MIN_RUN + 1):
        if text[i:i + MIN_RUN] in pieces:
            covered[i:i + MIN_RUN] = [True] * MIN_RUN
    out, i = [], 0
    while i < len(text):
        if covered[i]:
            while i < len(text) and covered[i]:
                i += 1
            out.append(MASK)
        else:
            out.append(text[i])
            i += 1
    return "".join(out)
