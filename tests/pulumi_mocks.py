"""The Pulumi program under Pulumi's mocks: the harness the tests/test_pulumi_*.py files share.

The program is run for real (``__main__.py`` through ``runpy``) from copies of the
project in temporary folders, with the config the CLI would hand it: the defaults
declared in Pulumi.yaml merged with the stack file. A ``MockMonitor`` subclass keeps
every ``RegisterResource`` request, so dependencies, protect flags, providers and
which input values are secret are seen exactly as the engine would receive them.
"""

from __future__ import annotations

import contextlib
import json
import os
import runpy
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pulumi
import pytest
import yaml
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockMonitor, MockResourceArgs, Mocks

PROJECT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:postgresql.DefaultPrivileg has been deprecated:DeprecationWarning")
SECRET_SIG = rpc._special_secret_sig
SIG_KEY = rpc._special_sig_key

COMMAND = "command:local:Command"
SCHEMA = "postgresql:index/schema:Schema"
ROLE = "postgresql:index/role:Role"
GRANT = "postgresql:index/grant:Grant"
DEFAULT_PRIVILEGES = "postgresql:index/defaultPrivileges:DefaultPrivileges"
PROVIDER = "pulumi:providers:postgresql"

DB_PASSWORD = "db-Pa55-first"
BACKEND_PASSWORD = "backend-Pa55-first"
VERIFY_REPORT = {"ok": True, "checks": [{"name": "memberships_user_fk", "ok": True, "detail": "references auth.users"}]}

# A migration command's create and update (components/migrations.py), pinned: changing the
# text is an update of every migration command on every stack.
RECORDED = "true"

MIGRATIONS = {
    "027_memberships.sql": "ALTER TABLE app.memberships ADD COLUMN note text;\n",
    "028_fix_memberships_unique_constraint.sql": "ALTER TABLE app.memberships DROP CONSTRAINT IF EXISTS x;\n",
}


# --- the harness -------------------------------------------------------------------


@dataclass
class Registration:
    """One RegisterResource request, as the engine would receive it."""

    type: str
    name: str
    urn: str
    parent: str
    custom: bool
    inputs: dict[str, Any]  # secret values still wrapped in the RPC secret marker
    protect: bool | None
    dependencies: list[str]
    provider: str
    delete_before_replace: bool
    replace_on_changes: list[str]
    import_id: str
    retain_on_delete: bool | None
    source_position: str  # "uri#line" of the program's line that made it, as the engine gets it
    stack_trace: list[str]  # the frames sent with it, the same way


class CapturingMonitor(MockMonitor):
    """Keeps what the program asked the engine for, before the mocks turn it into state."""

    def __init__(self, mocks: Mocks) -> None:
        super().__init__(mocks)
        self.registrations: list[Registration] = []

    def RegisterResource(self, request):  # noqa: N802 - the gRPC method's name
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            self.registrations.append(
                Registration(
                    type=request.type,
                    name=request.name,
                    urn=response.urn,
                    parent=request.parent,
                    custom=request.custom,
                    inputs=rpc.deserialize_properties(request.object, keep_unknowns=True),
                    protect=request.protect if request.HasField("protect") else None,
                    dependencies=list(request.dependencies),
                    provider=request.provider,
                    delete_before_replace=request.deleteBeforeReplace,
                    replace_on_changes=list(request.replaceOnChanges),
                    import_id=request.importId,
                    retain_on_delete=request.retainOnDelete if request.HasField("retainOnDelete") else None,
                    source_position=_position(request.sourcePosition),
                    stack_trace=[_position(frame.pc) for frame in request.stackTrace.frames],
                )
            )
        return response


def _position(position: Any) -> str:
    return f"{position.uri}#{position.line}"


def _has_secret(value: Any) -> bool:
    if isinstance(value, dict):
        return value.get(SIG_KEY) == SECRET_SIG or any(_has_secret(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_secret(v) for v in value)
    return False


class ProgramMocks(Mocks):
    """State = inputs, plus what the providers compute.

    Like pulumi-command's WireDependencies, a command's stdout is secret when any input
    is (the environment carries the password): the program must unsecret the report itself.
    """

    def new_resource(self, args: MockResourceArgs):
        state = dict(args.inputs)
        if args.typ == COMMAND:
            stdout = json.dumps(VERIFY_REPORT) if "verify" in str(args.inputs.get("create")) else ""
            state["stdout"] = {SIG_KEY: SECRET_SIG, "value": stdout} if _has_secret(args.inputs) else stdout
            state["stderr"] = ""
        return f"{args.name}-id", state

    def call(self, args):
        return {}, None


@dataclass
class Run:
    registrations: list[Registration]
    exports: dict[str, tuple[Any, bool]]  # name -> (value, is_secret)
    checkout: Path

    def of_type(self, type_: str) -> list[Registration]:
        return [r for r in self.registrations if r.type == type_]

    def one(self, type_: str, name: str) -> Registration:
        found = [r for r in self.registrations if r.type == type_ and r.name == name]
        assert len(found) == 1, f"expected one {type_} named {name}, found {[r.name for r in self.of_type(type_)]}"
        return found[0]

    def urn(self, type_: str, name: str) -> str:
        return self.one(type_, name).urn

    @property
    def commands(self) -> dict[str, Registration]:
        return {r.name: r for r in self.of_type(COMMAND)}


def stack_config(stack: str, **overrides: Any) -> dict[str, Any]:
    """The config the CLI hands the program: Pulumi.yaml's defaults, then the stack file, then overrides.

    Secret values in the stack file cannot be decrypted here; tests pass their own.
    """
    project = yaml.safe_load((PROJECT / "Pulumi.yaml").read_text())
    values: dict[str, Any] = {
        key: spec["default"]
        for key, spec in project["config"].items()
        if ":" not in key and isinstance(spec, dict) and "default" in spec
    }
    stack_file = yaml.safe_load((PROJECT / f"Pulumi.{stack}.yaml").read_text()) or {}
    for key, value in (stack_file.get("config") or {}).items():
        namespace, _, short = key.partition(":")
        if namespace == "appdb" and not isinstance(value, dict):
            values[short] = value
    values.setdefault("dbHost", f"db.{stack}-ref.supabase.co")
    values.update(dbPassword=DB_PASSWORD, backendPassword=BACKEND_PASSWORD)
    values.update(overrides)
    return values


def make_checkout(root: Path, migrations: dict[str, str] | None = None) -> Path:
    """A copy of the project, as another clone of the repository would be, with test migrations."""
    root.mkdir(parents=True)
    for name in ("__main__.py", "Pulumi.yaml", "Pulumi.local.yaml", "Pulumi.dev.yaml", "Pulumi.prod.yaml"):
        shutil.copy(PROJECT / name, root / name)
    for package in ("components", "appdb", "bin"):
        shutil.copytree(PROJECT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "sql" / "revert").mkdir(parents=True)
    for filename, text in (MIGRATIONS if migrations is None else migrations).items():
        (root / "sql" / filename).write_text(text)
        (root / "sql" / "revert" / filename).write_text("-- revert\nSELECT 1;\n")
    return root


_PROGRAM_PACKAGES = ("components", "appdb")


def _is_program_module(name: str) -> bool:
    return name in _PROGRAM_PACKAGES or name.startswith(tuple(f"{p}." for p in _PROGRAM_PACKAGES))


@contextlib.contextmanager
def program_modules(checkout: Path) -> Iterator[None]:
    """Import ``components`` and ``appdb`` from ``checkout``, then put back exactly the modules there were.

    Other test modules hold references to the project's ``appdb`` modules; restoring
    them keeps their classes (errors, dataclasses) identical for the rest of the session.
    """
    saved = {name: module for name, module in sys.modules.items() if _is_program_module(name)}
    for name in saved:
        del sys.modules[name]
    sys.path.insert(0, str(checkout))
    try:
        yield
    finally:
        sys.path.remove(str(checkout))
        for name in [name for name in sys.modules if _is_program_module(name)]:
            del sys.modules[name]
        sys.modules.update(saved)


def run_program(checkout: Path, stack: str, config: dict[str, Any]) -> Run:
    """Run ``checkout/__main__.py`` under the mocks, from ``checkout`` as Pulumi would (cwd = project)."""
    mocks = ProgramMocks()
    monitor = CapturingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project="appdb", stack=stack, preview=False, monitor=monitor)
    secret = ("dbPassword", "backendPassword")
    pulumi.runtime.set_all_config(
        {f"appdb:{key}": value if isinstance(value, str) else json.dumps(value) for key, value in config.items()},
        [f"appdb:{key}" for key in secret],
    )
    exports: dict[str, tuple[Any, bool]] = {}

    async def collect() -> None:
        root = pulumi.runtime.get_root_resource()
        for name, value in root.outputs.items():
            output = pulumi.Output.from_input(value)
            exports[name] = (await output.future(), await output.is_secret())

    @pulumi.runtime.test
    def program():
        runpy.run_path(str(checkout / "__main__.py"), run_name="__main__")
        return pulumi.Output.from_input(collect())

    cwd = os.getcwd()
    with program_modules(checkout):
        os.chdir(checkout)
        try:
            program()
        finally:
            os.chdir(cwd)
    return Run(monitor.registrations, exports, checkout)


STACKS = ("local", "dev", "prod")


# --- helpers for assertions -------------------------------------------------------


def plain_strings(value: Any) -> Iterator[str]:
    """Every string in ``value`` that is NOT inside a secret marker."""
    if isinstance(value, dict):
        if value.get(SIG_KEY) == SECRET_SIG:
            return
        for key, item in value.items():
            yield str(key)
            yield from plain_strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from plain_strings(item)
    elif isinstance(value, str):
        yield value


def secret_values(value: Any) -> list[Any]:
    if isinstance(value, dict):
        if value.get(SIG_KEY) == SECRET_SIG:
            return [value["value"]]
        return [s for item in value.values() for s in secret_values(item)]
    if isinstance(value, list):
        return [s for item in value for s in secret_values(item)]
    return []


def reveal(value: Any) -> Any:
    """``value`` with secret markers removed: the plain values a provider would receive."""
    if isinstance(value, dict):
        if value.get(SIG_KEY) == SECRET_SIG:
            return reveal(value["value"])
        return {key: reveal(item) for key, item in value.items()}
    if isinstance(value, list):
        return [reveal(item) for item in value]
    return value


def env(registration: Registration) -> dict[str, Any]:
    """A command's environment. The SDK marks the whole map secret, since PGPASSWORD is."""
    return reveal(registration.inputs["environment"])


PASSWORD_VARIABLES = ("PGPASSWORD",)


def comparable(registration: Registration) -> dict[str, Any]:
    """A command's inputs as they would be diffed, with only the password values masked.

    Everything else inside the secret environment stays visible, so a change to any
    other value (a path, a checksum, a setting) still shows.
    """
    inputs = reveal(registration.inputs)
    environment = dict(inputs.get("environment", {}))
    for name in PASSWORD_VARIABLES:
        if name in environment:
            environment[name] = "[password]"
    return {**inputs, "environment": environment}


def depends_on(run: Run, registration: Registration, type_: str, name: str) -> bool:
    return run.urn(type_, name) in registration.dependencies


def waits_for(run: Run, registration: Registration, urn: str) -> bool:
    """Whether ``registration`` depends on ``urn`` through any chain of dependencies.

    This is what orders two resources on the engine: it starts a resource only when
    all it depends on is done, and deletes in the reverse order.
    """
    by_urn = {r.urn: r for r in run.registrations}
    seen: set[str] = set()
    todo = list(registration.dependencies)
    while todo:
        current = todo.pop()
        if current == urn:
            return True
        if current in seen or current not in by_urn:
            continue
        seen.add(current)
        todo.extend(by_urn[current].dependencies)
    return False


