"""One command resource per migration file, applied in order; deleting one runs its revert.

What makes this safe is what the commands' inputs leave out. In pulumi-command 1.x
only ``triggers`` forces a replacement; any other change to an input is an update,
and the update runs ``apply --only ID`` again, which applies nothing twice. A
replacement would create the new command and then delete the old one, and the old
one's delete is the revert. So these commands have no ``triggers`` and no ``dir``,
and nothing in their inputs depends on the machine: the commands call
``./bin/appdb`` relative to the project (the provider runs them in the directory
Pulumi runs in), and ``bin/appdb`` finds the project's interpreter itself.

Editing an applied file changes ``APPDB_MIGRATION_CHECKSUM``: an update, which the
engine refuses loudly because the file no longer matches what was applied. Removing
a file removes its resource, and only then does its delete (the revert, read from the
ledger, so it works after the file is gone) run. Pulumi runs those deletes after
all creates and updates, newest migration first because each depends on the one before.

Resource names and commands carry the migration's *version*, normalised (``027``, from
``27_x.sql``, ``027_x.sql`` or ``0027_x.sql`` alike), never the id as the file spells it.
A changed name is a new URN, and Pulumi would create the new command and delete the old
one, whose delete is the revert: renaming ``027_x.sql`` to ``0027_x.sql`` would drop every
table. So a rename that keeps the version changes only ``APPDB_MIGRATION_FILE``: an update,
which applies nothing. Three digits, as the shipped files have, so the stacks' URNs
(``migration-027`` ... ``migration-030``) are the ones they always had.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import pulumi
from pulumi_command import local

APPDB = "./bin/appdb"


class MigrationFile(Protocol):
    """What the component needs from ``appdb.migration.Migration``."""

    id: str
    name: str
    checksum: str

    @property
    def filename(self) -> str: ...


@dataclass
class MigrationsArgs:
    migrations: Sequence[MigrationFile]
    environment: dict[str, pulumi.Input[str]]
    # dev and local may revert a migration that loses data; prod's reverts refuse to.
    allow_data_loss: bool = False
    # The schema and roles: they exist before the first migration runs.
    after: list[pulumi.Resource] = field(default_factory=list)


def version(migration_id: str) -> str:
    """The version as every resource name, command and output spells it: at least three digits."""
    return f"{int(migration_id):03d}"


def apply_command(migration_id: str) -> str:
    return f"{APPDB} apply --only {migration_id}"


def revert_command(migration_id: str, allow_data_loss: bool) -> str:
    flag = " --allow-data-loss" if allow_data_loss else ""
    return f"{APPDB} revert {migration_id}{flag}"


class Migrations(pulumi.ComponentResource):
    """``self.commands`` holds one ``local.Command`` per migration, oldest first."""

    def __init__(self, name: str, args: MigrationsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("appdb:index:Migrations", name, None, opts)
        ids = [m.id for m in args.migrations]
        if ids != sorted(ids, key=int) or len(set(map(int, ids))) != len(ids):
            raise ValueError(f"migrations: must be in version order without duplicates, got {ids}")
        if any("APPDB_MIGRATION" in key for key in args.environment):
            raise ValueError("environment: APPDB_MIGRATION_* variables are set per migration")

        self.commands: list[local.Command] = []
        previous: list[pulumi.Resource] = list(args.after)
        for migration in args.migrations:
            migration_version = version(migration.id)
            command = local.Command(
                f"{name}-{migration_version}",
                create=apply_command(migration_version),
                update=apply_command(migration_version),
                delete=revert_command(migration_version, args.allow_data_loss),
                environment={
                    **args.environment,
                    "APPDB_MIGRATION_FILE": migration.filename,
                    "APPDB_MIGRATION_CHECKSUM": migration.checksum,
                },
                opts=pulumi.ResourceOptions(
                    parent=self,
                    depends_on=previous,
                    # Unprotected on every stack, so a rollback can run a harmless revert.
                    protect=False,
                ),
            )
            self.commands.append(command)
            previous = [*args.after, command]
        # The version, not the spelling: the output (and the verification digest made from
        # it) stays the same when a file is renamed to another spelling of its version.
        self.applied = [{"id": version(m.id), "name": m.name, "checksum": m.checksum} for m in args.migrations]
        self.register_outputs({"migrations": self.applied})
