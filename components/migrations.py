"""The migrations as command resources: one that applies every pending migration, then one per file.

``migrations-apply`` runs ``./bin/appdb apply``: every pending migration, in order, in one
process, under the engine's lock, each step with ``lock_timeout`` and retries, stopping at
the first failure (exit 1, so the deploy fails and nothing that depends on it runs). Its
inputs carry a digest of every migration's version and checksum, so it runs again exactly
when a file is added, removed or edited; an edited applied file is then refused loudly by
the engine, as before.

Before it, one command per migration file, each waiting for the one before, and
``migrations-apply`` waits for them all: the plan still shows each migration one by one
(``+ migration-031`` in a preview is a pending migration), and each one's *delete* is its
revert (``./bin/appdb revert ID``), as it always was; Pulumi runs those deletes one after
another, so they pass ``--fork-server`` and share one warm appdb (appdb/forkserver/)
instead of each paying Python's start-up. Their create and update cost nothing
(:data:`RECORDED`, a shell no-op; a separate Python process per migration cost about 0.3 s
each, issue 20). They come first so that every migration ``migrations-apply`` applies already
has its resource: when 031 applies and 032 fails in one run, removing 031's file later
still reverts it (``revert`` of a migration that was never applied does nothing).

What makes this safe is what the commands' inputs leave out. In pulumi-command 1.x
only ``triggers`` forces a replacement; any other change to an input is an update.
A replacement would create the new command and then delete the old one, and the old
one's delete is the revert. So these commands have no ``triggers`` and no ``dir``,
and nothing in their inputs depends on the machine: the commands call
``./bin/appdb`` relative to the project (the provider runs them in the directory
Pulumi runs in), and ``bin/appdb`` finds the project's interpreter itself. Stacks
deployed when each migration's create was ``./bin/appdb apply --only ID`` see the new
strings as an update of every migration command (a no-op) and the creation of
``migrations-apply`` (which finds nothing pending): nothing is replaced or reverted.

Editing an applied file changes ``APPDB_MIGRATION_CHECKSUM`` and the digest: updates;
``migrations-apply``'s runs ``apply``, which refuses the changed file by name. Removing
a file removes its resource, and only then does its delete (the revert, read from the
ledger, so it works after the file is gone) run. Pulumi runs those deletes after
all creates and updates (``migrations-apply``'s update applies nothing: the engine
leaves a removed migration to its revert), newest migration first because each
depends on the one before.

Resource names and commands carry the migration's *version*, normalised (``027``, from
``27_x.sql``, ``027_x.sql`` or ``0027_x.sql`` alike), never the id as the file spells it.
A changed name is a new URN, and Pulumi would create the new command and delete the old
one, whose delete is the revert: renaming ``027_x.sql`` to ``0027_x.sql`` would drop every
table. So a rename that keeps the version changes only ``APPDB_MIGRATION_FILE``: an update,
which applies nothing (and the digest holds versions, not file names). Three digits, as
the shipped files have, so the stacks' URNs (``migration-027`` ... ``migration-030``) are
the ones they always had.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import pulumi
from pulumi_command import local

from components import sdk_at_scale
from components.commands import APPDB, digest

# Every pending migration, in order, in one process: what `migrations-apply` runs.
APPLY_PENDING = f"{APPDB} apply"
# A migration command's create and update: `migrations-apply`, which waits for it, applies it.
# Bare: Pulumi writes the whole state after every step, and each migration holds this string
# four times (create and update, inputs and outputs), so its bytes are paid once per migration
# in every step of a deploy (issue 20: a destroy's step grows with the state's size).
RECORDED = "true"


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


def pending_digest(migrations: Sequence[MigrationFile]) -> str:
    """What ``migrations-apply`` re-runs on: every version and checksum (not file names: a rename applies nothing)."""
    return digest([{"id": version(m.id), "checksum": m.checksum} for m in migrations])


def revert_command(migration_id: str, allow_data_loss: bool) -> str:
    """A migration's delete. Pulumi deletes them one after another, so they share a fork server:
    each still runs on its own (its own connection, lock and ledger read), without Python's start-up."""
    flag = " --allow-data-loss" if allow_data_loss else ""
    return f"{APPDB} revert {migration_id}{flag} --fork-server"


class Migrations(pulumi.ComponentResource):
    """``self.commands``: one ``local.Command`` per migration, oldest first; ``self.apply`` applies what is pending after them."""

    def __init__(self, name: str, args: MigrationsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("appdb:index:Migrations", name, None, opts)
        ids = [m.id for m in args.migrations]
        if ids != sorted(ids, key=int) or len(set(map(int, ids))) != len(ids):
            raise ValueError(f"migrations: must be in version order without duplicates, got {ids}")
        if any("APPDB_MIGRATION" in key for key in args.environment):
            raise ValueError("environment: APPDB_MIGRATION_* variables are set per migration")

        # The chain below would cost two of the SDK's own steps more than linear time, and stop
        # its cycle check past about 990 migrations (components/sdk_at_scale.py).
        sdk_at_scale.for_a_long_chain()
        # One command per migration first, each waiting for the one before: a resource per
        # migration exists in the state before anything is applied, so a migration that
        # `migrations-apply` applies is always one whose delete reverts it, even when a later
        # migration fails in the same run (reverting one that was never applied is a no-op).
        # Each waits for the one before alone, the first for the schema and roles: the chain
        # orders them all, and a dependency is bytes in every step's state write.
        self.commands: list[local.Command] = []
        previous: list[pulumi.Resource] = list(args.after)
        for migration in args.migrations:
            migration_version = version(migration.id)
            command = local.Command(
                f"{name}-{migration_version}",
                create=RECORDED,
                update=RECORDED,
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
            previous = [command]
        # No delete: reverting is each migration's own delete, which runs after this one's
        # update (Pulumi runs creates and updates before deletes).
        self.apply = local.Command(
            f"{name}s-apply",
            create=APPLY_PENDING,
            update=APPLY_PENDING,
            environment={**args.environment, "APPDB_MIGRATIONS_DIGEST": pending_digest(args.migrations)},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*args.after, *self.commands], protect=False),
        )
        # What must be done before the grants on the migrations' tables and verification.
        self.done: list[pulumi.Resource] = [*self.commands, self.apply]
        # The version, not the spelling: the output (and the verification digest made from
        # it) stays the same when a file is renamed to another spelling of its version.
        self.applied = [{"id": version(m.id), "name": m.name, "checksum": m.checksum} for m in args.migrations]
        self.register_outputs({"migrations": self.applied})
