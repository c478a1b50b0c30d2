"""The one error hierarchy: each class carries the exit code the issues promise.

Exit 1 is a failure of the work itself (a migration, a verification, a refusal);
exit 2 is usage or configuration (arguments, files, connection settings). The CLI
prints ``appdb: error: <message>`` on one line and exits with ``exit_code``.
"""

from __future__ import annotations


class AppdbError(Exception):
    """Base of every expected failure; the message is one line meant for a person."""

    exit_code = 1


class ConfigError(AppdbError):
    """Bad arguments, files or settings: nothing was attempted."""

    exit_code = 2


class ConnectError(AppdbError):
    """The database could not be reached or refused the login."""

    exit_code = 2


class MigrationError(AppdbError):
    """A migration or revert failed; its transaction was rolled back."""


class LockTimeout(MigrationError):
    """A statement waited longer than lock_timeout on every retry."""


class Refused(AppdbError):
    """The engine declined to act because acting would be wrong (changed file, data loss, order)."""


class VerificationFailed(AppdbError):
    """A post-deploy check did not hold."""
