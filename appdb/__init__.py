"""appdb: the migration engine, verification and local database behind the Pulumi program.

Plain Python with no Pulumi import, so it runs from a shell (``python -m appdb``) as
well as from the command resources in ``components/migrations.py``.
"""

__version__ = "0.1.0"
