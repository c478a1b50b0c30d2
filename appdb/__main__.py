"""``python -m appdb`` and ``bin/appdb``: the command line; a chain of reverts goes through the fork server.

The flag is spelled here (it is ``appdb.forkserver.FLAG``) so that no other command pays
for importing the fork server's modules.
"""

import sys


def main() -> int:
    argv = sys.argv[1:]
    if "--fork-server" in argv:
        from appdb.forkserver import main as run
    else:
        from appdb.cli import main as run
    return run(argv)


if __name__ == "__main__":
    raise SystemExit(main())
