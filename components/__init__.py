"""The Pulumi components: one module per concept, each a ComponentResource.

``__main__.py`` reads the stack's config and builds these; they never read config. Beside
them: ``commands`` (how the command resources call the engine), ``validation`` (checks on the
values they are given) and ``sdk_at_scale`` (two steps of the Pulumi SDK made cheaper, for the
chain of migration commands, and its record of each resource made smaller).
"""

from components.database import Database, DatabaseArgs
from components.grants import DEFAULT_ACCESS, Grants, GrantsArgs, TableAccess
from components.migrations import Migrations, MigrationsArgs
from components.roles import LoginRole, Roles, RolesArgs
from components.schema import AppSchema, AppSchemaArgs
from components.verification import Verification, VerificationArgs

__all__ = [
    "DEFAULT_ACCESS",
    "AppSchema",
    "AppSchemaArgs",
    "Database",
    "DatabaseArgs",
    "Grants",
    "GrantsArgs",
    "LoginRole",
    "Migrations",
    "MigrationsArgs",
    "Roles",
    "RolesArgs",
    "TableAccess",
    "Verification",
    "VerificationArgs",
]
