"""A SQL file's top-level statements: a small lexer, enough to refuse what must not run.

The runner sends each step to the server as it is written; this module reads the
same text only to answer questions before anything runs:

- Where does each top-level statement start, and what are its first words? A
  top-level ``COMMIT`` or ``ROLLBACK`` would end the runner's transaction (and with
  it ``lock_timeout`` and ``statement_timeout``), so :func:`refuse_transaction_control`
  refuses it with the file and line.
- Is every string, quoted identifier, dollar quote and comment closed? An
  unterminated one is refused here, at load, not on the day a revert is needed.
- Which indexes does a ``CREATE INDEX`` statement name, on which table? The runner
  uses this to drop the INVALID leftover of an interrupted ``CONCURRENTLY`` build.

It follows PostgreSQL's lexical rules (``'...'`` with ``''``, ``E'...'`` with
backslash escapes, ``"..."``, ``$tag$...$tag$``, ``--`` and nested ``/* */``
comments) and psql's rule for SQL-standard function bodies: inside
``CREATE [OR REPLACE] FUNCTION|PROCEDURE``, ``BEGIN ATOMIC ... END`` may hold
semicolons that do not end the statement. PL/pgSQL's BEGIN/END (in ``DO`` blocks and
function bodies) is inside a dollar quote or a string, which the lexer skips whole.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from appdb.errors import ConfigError

# Top-level statements that control the transaction: the runner owns transactions.
# Values: the word that must follow, or None when the first word alone is enough.
_TRANSACTION_CONTROL: dict[str, str | None] = {
    "begin": None, "start": "transaction", "commit": None, "end": None, "rollback": None,
    "abort": None, "savepoint": None, "release": None, "prepare": "transaction",
}
# PostgreSQL's identifier characters: ASCII letters, digits, `_` (and `$` after the first),
# and any non-ASCII character. Written as the ASCII characters they exclude: the same sets as
# `[A-Za-z_\u0080-\U0010ffff]` (tests/test_migration_files.py checks every code point), but a
# class spanning every code point takes the re module some 3 ms to compile, on every start.
_IDENT_START_CLASS = r"[^\x00-\x40\x5b-\x5e\x60\x7b-\x7f]"  # A-Z a-z _ and non-ASCII
_TAG_REST_CLASS = r"[^\x00-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]"  # also 0-9
_IDENT_REST_CLASS = r"[^\x00-\x23\x25-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]"  # also 0-9 and $
# What most of a file is, matched in one step from where the scanner stands, the group's number
# saying which (:meth:`_Scanner.run`); anything else (``$``, ``/*``, an E'...' string, whatever is
# left open) goes to the scanner's methods for it. Possessive quantifiers: a string or quoted
# identifier left open does not match at all, rather than a shorter one, so the method that
# reports it names its first line. A Python loop over each character was about 6 us a token here.
_SPACE, _LINE_COMMENT, _WORD, _STRING, _QUOTED, _PUNCT = range(1, 7)
_TOKEN = re.compile(
    r"(\s+)"  # a run of what str.isspace() calls whitespace (the same Py_UNICODE_ISSPACE)
    r"|(--[^\n]*)"
    rf"|({_IDENT_START_CLASS}{_IDENT_REST_CLASS}*)"
    r"|('(?:[^']+|'')*+')"
    r'|("(?:[^"]+|"")*+")'
    r"|([^'\"$/]|/(?!\*))"
)
_DOLLAR_TAG = re.compile(r"\$(" + _IDENT_START_CLASS + _TAG_REST_CLASS + r"*)?\$")
NAMEDATALEN = 63  # bytes PostgreSQL keeps of an identifier
# PostgreSQL folds an unquoted identifier's ASCII letters only, in a UTF8 database: `Ärger` stays
# `Ärger`, where Python's str.lower would make it `ärger` (another name, whose lock would miss).
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
# What may follow a U&"..." identifier: the escape character its escapes use instead of `\`.
_UESCAPE = re.compile(r"\s*uescape\s*'(?P<char>[^'])'", re.IGNORECASE)
# The only words track_atomic_body acts on; every other word leaves the depth as it is.
_BODY_WORDS = frozenset({"atomic", "case", "end"})


class Token(NamedTuple):
    """A word (keyword or unquoted identifier, folded to lower case), a quoted identifier,
    or a punctuation character; strings and comments are not kept.

    A named tuple, not a frozen dataclass: as immutable, and about five times quicker to
    make, which a history of a thousand files feels on every command (issue 20)."""

    kind: str  # "word", "ident", or "punct"
    value: str
    line: int


@dataclass(frozen=True)
class Statement:
    """One top-level statement: its tokens (without strings and comments) and first line."""

    tokens: tuple[Token, ...]

    @property
    def line(self) -> int:
        return self.tokens[0].line

    def words(self, count: int) -> list[str]:
        """The first ``count`` tokens' values when they are words, lower case ('' otherwise)."""
        return [t.value if t.kind == "word" else "" for t in self.tokens[:count]]


@dataclass(frozen=True)
class IndexTarget:
    """The index a ``CREATE INDEX`` names and the table it is built on (as regclass text).

    ``concurrently``: only a ``CONCURRENTLY`` build commits its catalog entry before it is
    done, so only such a build can leave an INVALID index behind when it is interrupted.
    """

    name: str
    table: str
    line: int
    concurrently: bool = False


class _Scanner:
    """One pass over the text; ``statements`` holds the result."""

    def __init__(self, text: str, source: str, first_line: int) -> None:
        self.text, self.source = text, source
        self.pos, self.line = 0, first_line
        self.statements: list[Statement] = []
        self.current: list[Token] = []
        self.paren_depth = 0
        self.begin_depth = 0

    def fail(self, what: str, line: int) -> ConfigError:
        return ConfigError(f"{self.source}:{line}: unterminated {what} that starts here: close it")

    def advance_to(self, end: int) -> None:
        self.line += self.text.count("\n", self.pos, end)
        self.pos = end

    def run(self) -> list[Statement]:
        text, match, length = self.text, _TOKEN.match, len(self.text)
        while self.pos < length:
            pos = self.pos
            found = match(text, pos)
            kind = found.lastindex if found else None
            if kind == _WORD:
                end = found.end()
                lower = fold(text[pos:end])
                if lower in _BODY_WORDS or (end < length and text[end] in "'&"):
                    self.word(end)  # it may begin a string, or nest a body
                else:
                    self.pos = end  # the common case, at a word a token: no method call
                    self.current.append(Token("word", lower, self.line))
            elif kind == _SPACE or kind == _LINE_COMMENT or kind == _STRING:
                end = found.end()
                self.line += text.count("\n", pos, end)
                self.pos = end
            elif kind == _PUNCT:
                self.punct(text[pos])
            elif kind == _QUOTED:
                line = self.line
                self.advance_to(found.end())
                self.add(Token("ident", text[pos + 1:found.end() - 1].replace('""', '"'), line))
            elif text.startswith("/*", pos):
                self.block_comment()
            elif text[pos] == "$":
                self.dollar()
            elif text[pos] == "'":
                self.string(pos, backslashes=False)  # left open: it says so
            else:
                self.quoted_identifier(pos)  # left open: it says so
        self.end_statement()
        return self.statements

    def block_comment(self) -> None:
        start_line, depth, pos = self.line, 0, self.pos
        while pos < len(self.text):
            if self.text.startswith("/*", pos):
                depth, pos = depth + 1, pos + 2
            elif self.text.startswith("*/", pos):
                depth, pos = depth - 1, pos + 2
                if depth == 0:
                    self.advance_to(pos)
                    return
            else:
                pos += 1
        raise self.fail("comment /*", start_line)

    def string(self, quote: int, backslashes: bool) -> None:
        """A string literal whose opening quote is at ``quote``; ``''`` is a quote inside."""
        start_line, pos = self.line, quote + 1
        while pos < len(self.text):
            char = self.text[pos]
            if backslashes and char == "\\":
                pos += 2
            elif char == "'":
                if self.text.startswith("'", pos + 1):
                    pos += 2
                else:
                    self.advance_to(pos + 1)
                    return
            else:
                pos += 1
        raise self.fail("string '", start_line)

    def quoted_identifier(self, quote: int) -> None:
        start_line, pos = self.line, quote + 1
        value: list[str] = []
        while pos < len(self.text):
            end = self.text.find('"', pos)
            if end < 0:
                break
            value.append(self.text[pos:end])
            if self.text.startswith('"', end + 1):
                value.append('"')
                pos = end + 2
                continue
            self.advance_to(end + 1)
            self.add(Token("ident", "".join(value), start_line))
            return
        raise self.fail('quoted identifier "', start_line)

    def dollar(self) -> None:
        match = _DOLLAR_TAG.match(self.text, self.pos)
        if not match:  # $1, a parameter: not a quote
            self.punct("$")
            return
        tag, start_line = match.group(0), self.line
        end = self.text.find(tag, match.end())
        if end < 0:
            raise self.fail(f"dollar quote {tag}", start_line)
        self.advance_to(end + len(tag))
        self.add(Token("punct", "$", start_line))

    def word(self, end: int) -> None:
        """The word from where the scanner stands to ``end``, or the prefix of the string or
        quoted identifier it begins (``E'...'``, ``U&"..."``)."""
        start = self.pos
        word = self.text[start:end]
        lower = fold(word)
        if end < len(self.text) and self.text[end] == "'" and lower in ("e", "b", "x", "n"):
            self.string(end, backslashes=lower == "e")
            return
        if lower == "u" and self.text.startswith("&'", end):
            self.string(end + 1, backslashes=False)
            return
        if lower == "u" and self.text.startswith('&"', end):
            self.quoted_identifier(end + 1)
            self.current[-1] = self.current[-1]._replace(value=self.unicode_escapes(self.current[-1].value))
            return
        self.pos = end  # an identifier holds no newline: no line to count
        if lower in _BODY_WORDS:
            self.track_atomic_body(lower)
        self.add(Token("word", lower, self.line))

    def unicode_escapes(self, raw: str) -> str:
        """A ``U&"..."`` identifier's name, as PostgreSQL reads it: ``\\XXXX`` and ``\\+XXXXXX``
        escapes decoded, with the character a following ``UESCAPE 'c'`` names instead of ``\\``.
        One the server would refuse is kept as written (the server says why when it runs)."""
        found = _UESCAPE.match(self.text, self.pos)
        escape = found.group("char") if found else "\\"
        out: list[str] = []
        position = 0
        try:
            while position < len(raw):
                char = raw[position]
                if char != escape:
                    out.append(char)
                    position += 1
                elif raw.startswith(escape, position + 1):
                    out.append(escape)
                    position += 2
                elif raw.startswith("+", position + 1):
                    out.append(chr(int(raw[position + 2:position + 8], 16)))
                    position += 8
                else:
                    out.append(chr(int(raw[position + 1:position + 5], 16)))
                    position += 5
        except ValueError:
            return raw
        return "".join(out)

    def track_atomic_body(self, word: str) -> None:
        """psql's heuristic, narrowed to what the server nests on: in CREATE [OR REPLACE]
    FUNCTION/PROCEDURE, BEGIN ATOMIC ... END and CASE ... END inside it nest; a word used
    as a label (after ``AS`` or ``.``) does not. psql's own rule counts any ``begin`` and a
    ``case`` label, and would hide a ``COMMIT`` after them from :func:`refuse_transaction_control`."""
        if self.paren_depth or not self.in_routine_definition():
            return
        previous = self.current[-1] if self.current else None
        if previous is not None and (previous.value == "." or _is_word(previous, "as")):
            return  # a label (`AS case`, `t.end`), not a keyword: the server would not nest on it
        if word == "atomic" and _is_word(previous, "begin"):
            # Only BEGIN ATOMIC opens a body: a bare `begin` (`SET search_path = begin`) does not.
            self.begin_depth += 1
        elif word == "case" and self.begin_depth:
            self.begin_depth += 1
        elif word == "end" and self.begin_depth:
            self.begin_depth -= 1

    def in_routine_definition(self) -> bool:
        words = [t.value for t in self.current[:4] if t.kind == "word"]
        if words[:1] != ["create"]:
            return False
        rest = words[3:4] if words[1:3] == ["or", "replace"] else words[1:2]
        return rest in (["function"], ["procedure"])

    def punct(self, char: str) -> None:
        self.pos += 1  # one character that is not whitespace: no newline
        if char == "(":
            self.paren_depth += 1
        elif char == ")":
            self.paren_depth = max(0, self.paren_depth - 1)
        elif char == ";" and not self.paren_depth and not self.begin_depth:
            self.end_statement()
            return
        self.add(Token("punct", char, self.line))

    def add(self, token: Token) -> None:
        self.current.append(token)

    def end_statement(self) -> None:
        if self.current:
            self.statements.append(Statement(tuple(self.current)))
        self.current, self.paren_depth, self.begin_depth = [], 0, 0


def fold(word: str) -> str:
    """An unquoted word as PostgreSQL folds it (its ASCII letters to lower case; ``_ASCII_LOWER``)."""
    return word.lower() if word.isascii() else word.translate(_ASCII_LOWER)


def split(text: str, source: str, first_line: int = 1) -> list[Statement]:
    """The top-level statements of ``text``; ConfigError (file:line) on anything left open."""
    return _Scanner(text, source, first_line).run()


def first_statement_end(text: str, source: str) -> int:
    """Where ``text``'s first top-level statement ends, just past its ``;`` (the text's length
    when none ends): a ``;`` inside a string, a quoted name or a body does not end it."""
    scanner = _FirstStatement(text, source, 1)
    try:
        scanner.run()
    except _FirstStatement.Ended as ended:
        return ended.at
    return len(text)


class _FirstStatement(_Scanner):
    """A scan that stops at the end of the first statement."""

    class Ended(Exception):
        def __init__(self, at: int) -> None:
            super().__init__(at)
            self.at = at

    def end_statement(self) -> None:
        if self.current:
            raise _FirstStatement.Ended(self.pos)
        super().end_statement()


LEDGER_SCHEMA = "appdb"  # appdb/migrate/ledger.py's, named here without importing the ledger


def refuse_naming_the_ledger(statements: list[Statement], source: str) -> None:
    """A top-level statement that names the ``appdb`` schema: refused with file and line.

    The ledger lives there; a ``transaction=false`` step that renamed or dropped it would leave
    every migration pending, and the next apply would run them all again. Named means: a
    qualified name ``appdb.x`` in any statement (an ``EXPLAIN ANALYZE``, a ``SELECT`` of a
    function, runs what it names), but a setting of appdb's own (``SET appdb.x``, ``ALTER ROLE ...
    SET appdb.x``) and a statement that makes ``appdb`` an alias (``AS appdb``); or ``appdb`` where
    a schema's name goes (after ``SCHEMA``, ``IF [NOT] EXISTS``, or in the list of ``DROP SCHEMA a,
    appdb``). A role called appdb, or a column, is not the schema. Only top-level statements are
    seen, as with every check of the text."""
    for statement in statements:
        tokens = statement.tokens
        aliased = any(_is_word(tokens[i - 1], "as") for i, t in enumerate(tokens)
                      if i and t.kind in ("word", "ident") and t.value == LEDGER_SCHEMA)
        for index, token in enumerate(tokens):
            if token.kind not in ("word", "ident") or token.value != LEDGER_SCHEMA:
                continue
            setting = index > 0 and tokens[index - 1].kind == "word" and tokens[index - 1].value in _SETTING_WORDS
            qualified = _is_punct(tokens, index + 1, ".") and not setting and not aliased
            if qualified or _in_schema_position(tokens, index):
                raise ConfigError(f"{source}:{token.line}: this statement names the {LEDGER_SCHEMA} schema, where "
                                  "appdb keeps its ledger: a migration must leave it alone (name another schema)")


# The words before a setting's name: appdb.allow_data_loss is appdb's setting, not its schema.
_SETTING_WORDS = frozenset({"set", "reset", "show", "local", "session"})
# What may follow a schema's name in a list of schemas (DROP SCHEMA a, b CASCADE; ON SCHEMA a, b TO ...).
_AFTER_SCHEMA_NAME = frozenset({"cascade", "restrict", "to", "from", "rename", "owner", "authorization", "is",
                                "grant", "revoke"})


def _is_punct(tokens: Sequence[Token], index: int, value: str) -> bool:
    return 0 <= index < len(tokens) and tokens[index].kind == "punct" and tokens[index].value == value


def _in_schema_position(tokens: Sequence[Token], index: int) -> bool:
    """Whether the name at ``index`` stands where a schema's name goes: right after ``SCHEMA``
    (and ``IF [NOT] EXISTS``), or in a comma list of such names."""
    at = index - 1
    while True:
        words = [t.value if t.kind == "word" else "" for t in tokens[max(at - 2, 0):at + 1]]
        if words[-1:] == ["schema"]:
            return True
        if words[-2:] == ["if", "exists"] or words[-3:] == ["if", "not", "exists"]:
            at -= 2 if words[-2:] == ["if", "exists"] else 3
            continue
        # a list: ", name" back to the SCHEMA keyword, the name at index ending the list or followed by ","
        if _is_punct(tokens, at, ",") and at >= 1 and tokens[at - 1].kind in ("word", "ident"):
            following = tokens[index + 1] if index + 1 < len(tokens) else None
            if following is not None and not (following.kind == "punct" and following.value in ",;") and not (
                    following.kind == "word" and following.value in _AFTER_SCHEMA_NAME):
                return False
            at -= 2
            continue
        return False


def refuse_transaction_control(statements: list[Statement], source: str) -> None:
    """A top-level BEGIN, COMMIT, ROLLBACK, SAVEPOINT and the like: refused with file and line."""
    for statement in statements:
        first, second = (statement.words(2) + [""])[:2]
        if first not in _TRANSACTION_CONTROL:
            continue
        needs = _TRANSACTION_CONTROL[first]
        if needs is not None and second != needs:
            continue
        shown = f"{first} {needs}" if needs else first
        raise ConfigError(
            f"{source}:{statement.line}: {shown.upper()} is transaction control, which the engine owns: "
            "remove it, and split work that needs its own transaction into steps ('-- appdb:step NAME')"
        )


def refuse_copy_stdio(statements: list[Statement], source: str) -> None:
    """``COPY ... FROM STDIN`` and ``TO STDOUT``: the data would come from (or go to) the
    runner's connection, which sends a step's text and nothing else; refused with file and line."""
    for statement in statements:
        if statement.words(1) != ["copy"]:
            continue
        # Only outside parentheses: COPY (SELECT * FROM stdin) TO '/file' reads a table named stdin.
        words, depth = [], 0
        for token in statement.tokens:
            if token.kind == "punct":
                depth += {"(": 1, ")": -1}.get(token.value, 0)
            elif token.kind == "word" and depth == 0:
                words.append(token.value)
        pairs = set(zip(words, words[1:]))
        if ("from", "stdin") in pairs or ("to", "stdout") in pairs:
            raise ConfigError(
                f"{source}:{statement.line}: COPY with STDIN or STDOUT needs a client that streams the data, "
                "which a migration is not: write the rows as INSERT ... VALUES, or COPY from a file the server reads"
            )


def needs_a_commit(statements: list[Statement]) -> bool:
    """Whether a statement's effect lasts until the transaction commits, so that what follows in
    the same transaction would see it otherwise than after a commit: ``ALTER TYPE ... ADD VALUE``
    (the new value cannot be used before the commit) and ``SET CONSTRAINTS`` (no ``RESET``
    undoes it). ``apply --group`` runs such a migration alone."""
    for statement in statements:
        first = statement.words(2)
        if first == ["set", "constraints"]:
            return True
        if first == ["alter", "type"]:
            words = [token.value for token in statement.tokens if token.kind == "word"]
            if ("add", "value") in zip(words, words[1:]):
                return True
    return False


def created_indexes(statements: list[Statement]) -> list[IndexTarget]:
    """Each named index a ``CREATE [UNIQUE] INDEX`` statement builds, with its table."""
    found: list[IndexTarget] = []
    for statement in statements:
        tokens = list(statement.tokens)
        words = statement.words(2)
        if words[:1] != ["create"]:
            continue
        position = 2 if words[1:2] == ["unique"] else 1
        if statement.words(position + 1)[position:] != ["index"]:
            continue
        position += 1
        concurrently = _skip_words(tokens, position, ["concurrently"])
        position += concurrently
        position += _skip_words(tokens, position, ["if", "not", "exists"])
        if position >= len(tokens) or tokens[position].kind == "punct" or _is_word(tokens[position], "on"):
            continue  # an unnamed index: PostgreSQL picks the name
        name = _truncate(tokens[position].value)
        position += 1
        if not _is_word(tokens[position] if position < len(tokens) else None, "on"):
            continue
        position += 1
        position += _skip_words(tokens, position, ["only"])
        table = _qualified_name(tokens, position)
        if table:
            found.append(IndexTarget(name=name, table=table, line=statement.line, concurrently=bool(concurrently)))
    return found


def emptied_tables(statements: list[Statement]) -> list[tuple[str, ...]]:
    """The tables a ``DROP TABLE`` or ``TRUNCATE`` statement names, each as its name's parts.

    A step that drops or empties a table is what a data-loss guard protects ("refuse while the
    table has rows"): the runner locks these tables before the step's first statement
    (:func:`appdb.migrate.steps.lock_first`), so that the guard's count and the drop see the same
    rows. Only top-level statements count: one inside a ``DO`` block or a string is not seen."""
    found: list[tuple[str, ...]] = []
    for statement in statements:
        tokens = list(statement.tokens)
        words = statement.words(2)
        if words == ["drop", "table"]:
            position = 2 + _skip_words(tokens, 2, ["if", "exists"])
        elif words[:1] == ["truncate"]:
            position = 1 + _skip_words(tokens, 1, ["table"])
        else:
            continue
        for parts in _listed_names(tokens, position):
            if parts not in found:
                found.append(parts)
    return found


def emptied_schemas(statements: list[Statement]) -> list[str]:
    """The schemas a ``DROP SCHEMA ... CASCADE`` statement names: it drops every table in them.

    The same reason as :func:`emptied_tables`: a guard that counts a table's rows, then drops
    its schema, must count with the table locked (the runner locks each table in these schemas
    before the step's first statement). Without ``CASCADE`` a schema that holds a table is not
    dropped, so there is nothing to lock. Top-level statements only, as for tables."""
    found: list[str] = []
    for statement in statements:
        if statement.words(2) != ["drop", "schema"]:
            continue
        tokens = list(statement.tokens)
        if not any(_is_word(token, "cascade") for token in tokens):
            continue
        for parts in _listed_names(tokens, 2 + _skip_words(tokens, 2, ["if", "exists"])):
            if len(parts) == 1 and parts[0] not in found:
                found.append(parts[0])
    return found


_ROW_WRITES = ("insert", "update", "delete", "merge", "copy", "truncate")
_CTE_WRITES = ("insert", "update", "delete", "merge")  # the verbs a WITH may hold


def first_row_write(statements: list[Statement]) -> tuple[str, int] | None:
    """The first top-level statement that writes or removes rows, as (its verb, its line): the
    catalog cannot show whether a database has the rows (``appdb baseline``). A ``WITH`` counts
    when one of its words is such a verb."""
    for statement in statements:
        verb = statement.words(1)[0] if statement.tokens else ""
        if verb in _ROW_WRITES:
            return verb.upper(), statement.line
        if verb == "with":
            found = next((t.value for t in statement.tokens if t.kind == "word" and t.value in _CTE_WRITES), None)
            if found:
                return found.upper(), statement.line
    return None


def refuse_unqualified_after_search_path(statements: list[Statement], source: str) -> None:
    """A ``DROP TABLE`` or ``TRUNCATE`` of a name without its schema, after a ``SET search_path``
    in the same step: refused with file and line. The runner locks the table before the step's
    first statement (:func:`emptied_tables`), looking the name up on the search_path the step
    begins with; after the step's own ``SET``, the drop would take another table, or one the lock
    missed, and a data-loss guard's count would not hold."""
    changed = False
    for statement in statements:
        words = [w for w in statement.words(3) if w not in ("local", "session")]
        if words[:2] == ["set", "search_path"]:
            changed = True
            continue
        if changed:
            for parts in emptied_tables([statement]):
                if len(parts) == 1:
                    raise ConfigError(
                        f"{source}:{statement.line}: {parts[0]!r} is dropped or emptied after this step's SET "
                        "search_path: name its schema (e.g. app.NAME), so that the lock the runner takes before "
                        "the step, on the search_path it begins with, is on the same table"
                    )


def _listed_names(tokens: list[Token], position: int) -> list[tuple[str, ...]]:
    """The names of a comma list at ``position`` (``a, ONLY b.c, d *``), each as its parts."""
    names: list[tuple[str, ...]] = []
    while position < len(tokens):
        position += _skip_words(tokens, position, ["only"])
        parts, position = _name_parts(tokens, position)
        if not parts:
            break
        names.append(parts)
        if _is_punct(tokens, position, "*"):  # TRUNCATE t * (its descendants too)
            position += 1
        if not _is_punct(tokens, position, ","):
            break
        position += 1
    return names


def _name_parts(tokens: list[Token], position: int) -> tuple[tuple[str, ...], int]:
    """``a.b`` (either part quoted or not) at ``position``: its parts, as stored, and where it ends."""
    parts: list[str] = []
    while position < len(tokens) and tokens[position].kind in ("word", "ident"):
        parts.append(_truncate(tokens[position].value))
        position += 1
        if _is_punct(tokens, position, "."):
            position += 1
        else:
            break
    return tuple(parts), position


def _is_word(token: Token | None, word: str) -> bool:
    return token is not None and token.kind == "word" and token.value == word


def _skip_words(tokens: list[Token], position: int, words: list[str]) -> int:
    """How many tokens to skip when ``words`` follow at ``position`` (0 when they do not)."""
    window = tokens[position:position + len(words)]
    return len(words) if len(window) == len(words) and all(_is_word(t, w) for t, w in zip(window, words)) else 0


def _qualified_name(tokens: list[Token], position: int) -> str:
    """``a.b`` (either part quoted or not) as regclass text with each part quoted; '' if none."""
    return regclass_text(_name_parts(tokens, position)[0])


def regclass_text(parts: tuple[str, ...]) -> str:
    """A name's parts as text ``to_regclass`` reads back to them: each part quoted."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in parts)


def _truncate(name: str) -> str:
    """The name as PostgreSQL stores it: at most 63 bytes."""
    raw = name.encode("utf-8")
    return raw[:NAMEDATALEN].decode("utf-8", errors="ignore") if len(raw) > NAMEDATALEN else name
