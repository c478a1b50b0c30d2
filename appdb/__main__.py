"""``python -m appdb``: the command line."""

from appdb.cli import main

raise SystemExit(main())
