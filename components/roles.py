"""The group roles the migrations' RLS policies name, and the login roles the application uses.

``app_writer`` and ``app_reader`` are fixed names (027's policies use them). Login
roles are configurable; each is a member of one group and gets nothing else: no
DDL, no CREATE on the schema. Membership is the ``roles`` input of the login role,
never a separate GrantRole, so no two resources manage the same membership.

Roles that already exist (production may have them) are adopted with the ``import``
option and kept on delete: the stack did not create them, so it does not drop them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_postgresql as postgresql

from appdb.access import GROUP_ROLES, WRITER
from components import validation


@dataclass
class LoginRole:
    """A role that logs in. ``key`` names the resource, so renaming the role is an update, not a replace."""

    key: str
    name: str
    password: pulumi.Input[str]
    member_of: str = WRITER


@dataclass
class RolesArgs:
    login_roles: list[LoginRole] = field(default_factory=list)
    adopt: list[str] = field(default_factory=list)


class Roles(pulumi.ComponentResource):
    """``self.groups`` and ``self.logins`` map keys to ``postgresql.Role`` resources."""

    def __init__(self, name: str, args: RolesArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("appdb:index:Roles", name, None, opts)
        names = list(GROUP_ROLES.values())
        for index, login in enumerate(args.login_roles):
            validation.identifier(login.key, f"login_roles[{index}].key")
            validation.identifier(login.name, f"login_roles[{index}].name")
            if login.member_of not in GROUP_ROLES.values():
                raise ValueError(
                    f"login_roles[{index}].member_of: {login.member_of!r} is not one of {sorted(GROUP_ROLES.values())}"
                )
            names.append(login.name)
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"login_roles: role names used twice: {', '.join(duplicates)}")
        keys = [login.key for login in args.login_roles] + list(GROUP_ROLES)
        if len(set(keys)) != len(keys):
            raise ValueError("login_roles: every login role needs its own key")
        for index, adopted in enumerate(args.adopt):
            validation.identifier(adopted, f"adopt[{index}]")
            if adopted not in names:
                raise ValueError(f"adopt[{index}]: {adopted!r} is not a role this program manages")
        adopt = set(args.adopt)

        def options(role_name: str, depends_on: list[pulumi.Resource] | None = None) -> pulumi.ResourceOptions:
            adopted = role_name in adopt
            return pulumi.ResourceOptions(
                parent=self,
                depends_on=depends_on,
                import_=role_name if adopted else None,
                retain_on_delete=True if adopted else None,
            )

        self.groups: dict[str, postgresql.Role] = {
            key: postgresql.Role(
                f"{name}-{key}",
                name=role_name,
                login=False,
                inherit=True,
                opts=options(role_name),
            )
            for key, role_name in GROUP_ROLES.items()
        }
        self.logins: dict[str, postgresql.Role] = {
            login.key: postgresql.Role(
                f"{name}-{login.key}",
                name=login.name,
                login=True,
                inherit=True,
                password=pulumi.Output.secret(login.password),
                roles=[login.member_of],
                opts=options(login.name, [self.groups[_key_of(login.member_of)]]),
            )
            for login in args.login_roles
        }
        self.settings = {
            "groups": dict(GROUP_ROLES),
            "logins": [{"key": login.key, "name": login.name, "member_of": login.member_of} for login in args.login_roles],
            "adopt": sorted(adopt),
        }
        self.register_outputs({"groups": list(GROUP_ROLES.values()), "logins": [login.name for login in args.login_roles]})

    @property
    def all(self) -> list[postgresql.Role]:
        return [*self.groups.values(), *self.logins.values()]


def _key_of(role_name: str) -> str:
    return next(key for key, name in GROUP_ROLES.items() if name == role_name)
