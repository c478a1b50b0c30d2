"""``python -m appdb`` and ``bin/appdb``: the command line; a command that asks goes through the fork server.

The flag and the variable are spelled here (they are ``appdb.forkserver.FLAG`` and
``appdb.forkserver.VARIABLE``) so that no other command pays for importing the fork server's
modules; and a served command's caller pays for no ``site``.
"""

import os
import sys


def main() -> int:
    argv = sys.argv[1:]
    if "--fork-server" in argv or os.environ.get("APPDB_FORK_SERVER", "").strip().lower() in ("1", "true", "yes", "on"):
        from appdb.forkserver import main as run
    else:
        _warn_of_an_unknown_setting()
        load_site()
        from appdb.cli import main as run
    return run(argv)


def _warn_of_an_unknown_setting() -> None:
    """APPDB_FORK_SERVER=maybe, or 2: neither on nor off; said, not silently taken for off."""
    value = os.environ.get("APPDB_FORK_SERVER", "")
    if value.strip().lower() not in ("", "0", "false", "no", "off"):
        sys.stderr.write(f"appdb: warning: APPDB_FORK_SERVER={value!r} is neither 1, true, yes, on nor 0, false, no, "
                         "off: no fork server\n")


def load_site() -> None:
    """Do what Python's start-up leaves to ``site`` (the virtualenv's packages, psycopg among
    them), where it was skipped: bin/appdb starts Python with -S, since a served revert's caller
    needs builtins only. Anything that runs a command itself calls this first."""
    if sys.flags.no_site and "site" not in sys.modules:
        import site

        site.main()


if __name__ == "__main__":
    raise SystemExit(main())
