"""The ``app`` schema: created if missing (production already has it), owned by the admin role."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_postgresql as postgresql

from appdb.access import SCHEMA
from components import validation


@dataclass
class AppSchemaArgs:
    """``owner`` is the role that runs the migrations; ``protect`` comes from the stack's config."""

    database: pulumi.Input[str]
    owner: str
    name: str = SCHEMA  # appdb.access's: the engine and the program name one schema
    protect: bool = True


class AppSchema(pulumi.ComponentResource):
    """One ``postgresql.Schema``. ``if_not_exists`` adopts an existing schema without touching it."""

    schema: postgresql.Schema

    def __init__(self, name: str, args: AppSchemaArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("appdb:index:AppSchema", name, None, opts)
        validation.identifier(args.name, "name")
        validation.identifier(args.owner, "owner")

        self.name = args.name
        self.schema = postgresql.Schema(
            name,
            name=args.name,
            database=args.database,
            owner=args.owner,
            if_not_exists=True,
            # Never DROP ... CASCADE: a destroy that meets a table fails instead of taking data with it.
            drop_cascade=False,
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
        )
        self.register_outputs({"name": self.schema.name})
