"""``appdb verify --json`` after every migration and grant, with its result as a stack output.

A failed check exits 1, which fails the command and so ``pulumi up``; the failed
create or update leaves the old state, so the next ``up`` runs it again. A no-op
``up`` runs nothing: the command's inputs change only when ``digest`` does, and the
program derives it from the migration checksums and the role and grant settings.

Command outputs inherit secretness from the inputs (the environment carries the
password), so ``stdout`` is secret. The report holds no secret, and the result is
unsecreted on purpose so that people can read it in ``pulumi stack output``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi_command import local

from components.commands import APPDB

VERIFY = f"{APPDB} verify --json"


@dataclass
class VerificationArgs:
    environment: dict[str, pulumi.Input[str]]
    digest: str
    after: list[pulumi.Resource] = field(default_factory=list)


def parse_report(stdout: str | None) -> Any:
    """The JSON report, or None during a preview when nothing ran."""
    if not stdout:
        return None
    return json.loads(stdout)


class Verification(pulumi.ComponentResource):
    def __init__(self, name: str, args: VerificationArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("appdb:index:Verification", name, None, opts)
        if len(args.digest) != 64:
            raise ValueError("digest: expected a sha256 hex digest of the deployed settings")
        self.command = local.Command(
            name,
            create=VERIFY,
            update=VERIFY,
            environment={**args.environment, "APPDB_DEPLOY_DIGEST": args.digest},
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.after), protect=False),
        )
        self.result = pulumi.Output.unsecret(self.command.stdout.apply(parse_report))
        self.register_outputs({"result": self.result})
