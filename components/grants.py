"""Who may use the ``app`` schema and its tables, the Supabase API roles included.

How pulumi-postgresql's resources behave decides the shape of this module:

* ``Grant`` REVOKEs everything the role has on its objects and then GRANTs, in one
  transaction, on create and on update; its delete REVOKEs everything. So two Grants
  for the same role on the same objects undo each other (the second create wipes
  the first; deleting either wipes both). Each role therefore has at most one Grant
  per kind of object here, and the constructor refuses a role listed twice.
* ``Grant`` is marked delete-before-replace by the provider (pulumi-postgresql #235):
  on a replacement the old REVOKE runs before the new GRANT, so nothing is left
  revoked. ``DefaultPrivileges`` is not: a replacement would run the new resource's
  ALTER DEFAULT PRIVILEGES ... GRANT and then the old one's ... REVOKE ALL on the same
  (owner, schema, role), leaving nothing. It gets ``delete_before_replace=True``.
* Resource names derive from the role and the kind of object and never change, so
  no grant is ever deleted-and-recreated under a new name (a rename without an alias
  would create the new grant first and then let the old one's delete revoke it).

* No two of these resources ever run at once. A ``Grant`` or ``DefaultPrivileges``
  rewrites one catalog row per object (``pg_namespace.nspacl`` for the schema,
  ``pg_class.relacl`` for each table or sequence, ``pg_default_acl`` for an owner's
  defaults in the schema) whoever the grantee is, and the provider serialises only on
  the role. Pulumi runs every resource whose dependencies are done in parallel, so two
  grants to different roles on the schema would rewrite the same row at once and
  PostgreSQL refuses the second: ``tuple concurrently updated``. Every privilege
  resource here therefore depends on the one before it, in the plan's order: one chain,
  which holds on create, update and replace (a resource registers only once the one
  before it is done) and on delete and ``destroy`` (deletes run in reverse dependency
  order, so the chain unwinds one by one). It costs a few hundred milliseconds of
  ``up`` time on a first deploy and nothing on a no-op one.

The chain starts after the migrations that create the tables (``tables_after``);
default privileges, owned by the role that runs the migrations, cover tables that
later migrations create. The plan itself is data, in ``appdb/access.py``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import pulumi
import pulumi_postgresql as postgresql

from appdb.access import DEFAULT_ACCESS, TABLE_PRIVILEGES, TableAccess
from components import validation


@dataclass
class GrantsArgs:
    database: pulumi.Input[str]
    schema: str
    owner: str
    access: tuple[TableAccess, ...] = DEFAULT_ACCESS
    # What must exist first: the schema and the roles (for USAGE), and the migrations (for tables).
    requires: list[pulumi.Resource] = field(default_factory=list)
    tables_after: list[pulumi.Resource] = field(default_factory=list)


class Grants(pulumi.ComponentResource):
    def __init__(self, name: str, args: GrantsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("appdb:index:Grants", name, None, opts)
        validation.identifier(args.schema, "schema")
        validation.identifier(args.owner, "owner")
        seen: set[str] = set()
        for index, access in enumerate(args.access):
            where = f"access[{index}]"
            validation.identifier(access.role, f"{where}.role")
            if access.role in seen:
                raise ValueError(
                    f"{where}.role: {access.role!r} is listed twice; two grants to one role on the same "
                    "objects undo each other, so give each role one entry"
                )
            seen.add(access.role)
            for table in access.tables:
                validation.identifier(table, f"{where}.tables")
            unknown = set(access.privileges) - TABLE_PRIVILEGES
            if unknown:
                raise ValueError(f"{where}.privileges: not table privileges: {', '.join(sorted(unknown))}")
            if access.future and access.tables:
                raise ValueError(f"{where}.future: default privileges cover all future tables; drop `tables` or `future`")

        # One chain: every privilege resource depends on the one before it (see the module's
        # docstring), and the first on the schema, the roles and the migrations.
        self.grants: list[postgresql.Grant] = []
        self.default_privileges: list[postgresql.DefaultPrivileges] = []
        self.chain: list[pulumi.CustomResource] = []

        def after_previous(**extra: object) -> pulumi.ResourceOptions:
            previous = self.chain[-1:] or [*args.requires, *args.tables_after]
            return pulumi.ResourceOptions(parent=self, depends_on=previous, **extra)

        def grant(role: str, suffix: str, object_type: str, privileges: tuple[str, ...],
                  objects: tuple[str, ...] = ()) -> None:
            resource = postgresql.Grant(
                f"{name}-{role}-{suffix}",
                database=args.database,
                schema=args.schema,
                role=role,
                object_type=object_type,
                objects=list(objects) or None,
                privileges=list(privileges),
                opts=after_previous(),
            )
            self.grants.append(resource)
            self.chain.append(resource)

        def default_privileges(role: str, suffix: str, object_type: str, privileges: tuple[str, ...]) -> None:
            resource = postgresql.DefaultPrivileges(
                f"{name}-{role}-future-{suffix}",
                database=args.database,
                schema=args.schema,
                owner=args.owner,
                role=role,
                object_type=object_type,
                privileges=list(privileges),
                opts=after_previous(delete_before_replace=True),
            )
            self.default_privileges.append(resource)
            self.chain.append(resource)

        for access in args.access:
            if access.schema_usage:
                grant(access.role, "usage", "schema", ("USAGE",))
            grant(access.role, "tables", "table", access.privileges, access.tables)
            if access.sequence_privileges:
                grant(access.role, "sequences", "sequence", access.sequence_privileges)
            if access.future:
                default_privileges(access.role, "tables", "table", access.privileges)
                if access.sequence_privileges:
                    default_privileges(access.role, "sequences", "sequence", access.sequence_privileges)
        self.settings = {
            "schema": args.schema,
            "owner": args.owner,
            "access": [asdict(access) for access in args.access],
        }
        self.register_outputs({"roles": [access.role for access in args.access]})
