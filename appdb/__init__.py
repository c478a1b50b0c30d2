"""appdb: the migration engine, verification and local database behind the Pulumi program.

Plain Python with no Pulumi import, so it runs from a shell (``python -m appdb``) as
well as from the command resources in ``components/migrations.py``. The code map,
bottom to top (a package imports only the ones below it):

- ``errors``, ``libpq``, ``connection``, ``redact``, ``access``: error classes and exit codes;
  the libpq settings appdb knows; DSNs, refusals and connecting; redaction of every secret
  form; the schema name, group roles and the access plan.
- ``migrate/``: sql/ files to the database, exactly once (``status``, ``apply``, ``revert``, ``new``):
  ``files`` and ``statements`` read them, ``ledger`` records them, ``runner`` applies and reverts
  them, one step at a time as ``steps`` says, or a group a transaction (``group``, ``apply --group``).
- ``checks/``: what a deploy must guarantee, read from the live catalog (``verify``, ``inspect``).
- ``local/``: clusters the project owns (``local up|down|url|reset|password``), the Supabase shape.
- ``schema/``: the schema as canonical text (``schema``, ``diff``), built on throwaway clusters.
- ``adopt/``: a live database brought under code (``pull``, ``baseline``).
- ``cli``: argparse; each ``cmd_<verb>`` calls the library and prints its result.
- ``forkserver``: above the CLI: one warm interpreter that forks a fresh process per command,
  for Pulumi's chain of reverts and for the everyday commands (``revert``, ``status``, ``apply``
  and ``verify`` with ``--fork-server``).
"""

__version__ = "0.1.0"
