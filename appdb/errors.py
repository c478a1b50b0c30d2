"""The one error hierarchy: each class carries the exit code the issues promise.

Exit 1 is a failure of the work itself (a migration, a verification, a refusal);
exit 2 is usage or configuration (arguments, files, connection settings). The CLI
prints ``appdb: error: <message>`` on one line and exits with ``exit_code``; only
``main`` prints it. An error may carry ``lines``, the detail a person needs to act on
(one per object), which ``main`` prints to stdout before the error line.

Every expected failure is one of these classes, and every class lives here.
"""

from __future__ import annotations

from collections.abc import Sequence

# What appdb says, and exits with, when Ctrl-C stops it: the runner's transaction rolls back.
INTERRUPTED = "interrupted; the step in progress was rolled back (with apply --group, its whole group)"
INTERRUPTED_EXIT = 130


class Interrupted(KeyboardInterrupt):
    """Ctrl-C at a moment when "rolled back" would not be true (the commit was on its way, or a
    ``transaction=false`` step had run): the message says what is known instead; ``uncertain``
    names the migrations whose ledger rows may or may not have committed."""

    def __init__(self, message: str, uncertain: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.uncertain = list(uncertain)


class AppdbError(Exception):
    """Base of every expected failure; the message is one line meant for a person."""

    exit_code = 1

    def __init__(self, message: str, lines: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.lines = list(lines)


class ConfigError(AppdbError):
    """Bad arguments, files or settings: nothing was attempted."""

    exit_code = 2


class ConnectError(AppdbError):
    """The database could not be reached or refused the login."""

    exit_code = 2


class MigrationError(AppdbError):
    """A migration or revert failed: its transaction was rolled back, unless ``uncertain`` names it
    (the connection went as it committed: its ledger row may or may not be there)."""

    def __init__(self, message: str, lines: Sequence[str] = (), uncertain: Sequence[str] = ()) -> None:
        super().__init__(message, lines)
        self.uncertain = list(uncertain)


class LockTimeout(MigrationError):
    """A statement waited longer than lock_timeout on every retry."""


class Refused(AppdbError):
    """The engine declined to act because acting would be wrong (changed file, data loss, order)."""


class SchemaNotFound(ConfigError):
    """The schema to describe does not exist in the database (wrong database or name)."""


class MalformedDescription(ConfigError):
    """A description's text (e.g. the committed snapshot) cannot be read back."""


class NotThere(Refused):
    """baseline: the database lacks what the migration makes; ``lines`` names each object."""


class VerificationFailed(AppdbError):
    """A post-deploy check did not hold; ``report`` is the whole verification report."""

    def __init__(self, report: object, failed: Sequence[str]) -> None:
        super().__init__(f"verification failed: {', '.join(failed)}")
        self.report = report


class DriftFound(AppdbError):
    """``appdb diff``: the live schema differs from the snapshot, or the ledgers disagree so it was not compared."""


class StaleSnapshot(AppdbError):
    """``appdb schema --check``: the committed snapshot does not describe what the migrations build."""
