"""The GitHub Actions workflows: valid against GitHub's schema, and safe for a team.

Every workflow is validated offline with ``check-jsonschema --builtin-schema
vendor.github-workflows``, then held to the rules of docs/delivery.md. Each rule is a
function returning the problems it finds, and each is shown to catch the mistake it
guards against on a deliberately broken copy, so a rule that stops working fails here.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
CI = ROOT / "ci"
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"

# The only scopes a job may write, and why: commenting on a PR, and the drift issue.
ALLOWED_WRITES = {"pull-requests", "issues"}
# Contexts a PR's author controls; none may be interpolated into a script.
UNTRUSTED = re.compile(r"github\s*\.\s*(event|head_ref)\b|\binputs\s*\.")
EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}", re.S)
PINNED = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(/[A-Za-z0-9_./-]+)?@[0-9a-f]{40}$")
DEPLOY_ENVIRONMENTS = {"dev", "prod"}


def load(path: Path) -> dict:
    """A workflow as a dict; YAML 1.1 reads the key ``on`` as True, so it is put back."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if True in data:
        data["on"] = data.pop(True)
    return data


def workflow_paths() -> list[Path]:
    return sorted([*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml")])


@pytest.fixture(scope="module")
def workflows() -> dict[str, dict]:
    return {path.stem: load(path) for path in workflow_paths()}


# --- helpers over a loaded workflow ------------------------------------------------------

def triggers(wf: dict) -> dict:
    on = wf.get("on", {})
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return {name: None for name in on}
    return on or {}


def steps(job: dict) -> list[dict]:
    return job.get("steps", []) or []


def environment_name(job: dict) -> str | None:
    env = job.get("environment")
    return env.get("name") if isinstance(env, dict) else env


def matrix_values(job: dict, text: str) -> list[str]:
    """``text`` for each value of the job's matrix it names (``preview-${{ matrix.stack }}``);
    text without a matrix reference stays itself."""
    reference = re.compile(r"\$\{\{\s*matrix\.(\w+)\s*\}\}")
    keys = set(reference.findall(str(text)))
    if not keys:
        return [str(text)]
    if len(keys) > 1:
        raise AssertionError(f"{text!r}: one matrix key per value, please")
    values = job.get("strategy", {}).get("matrix", {}).get(keys.pop(), [])
    return [reference.sub(str(value), str(text)) for value in values]


def pulumi_steps(job: dict, command: str) -> list[dict]:
    return [s for s in steps(job) if str(s.get("uses", "")).startswith("pulumi/actions@")
            and s.get("with", {}).get("command") == command]


def scripts(job: dict) -> list[str]:
    """Everything a job executes as code: run: blocks and github-script's script: input."""
    found = [str(s["run"]) for s in steps(job) if "run" in s]
    found += [str(s["with"]["script"]) for s in steps(job) if "script" in s.get("with", {})]
    return found


def all_runs(wf: dict) -> str:
    return "\n".join(script for job in wf.get("jobs", {}).values() for script in scripts(job))


# --- the rules, each returning its problems ----------------------------------------------

def trigger_problems(wf: dict) -> list[str]:
    return ["pull_request_target runs PR code with secrets and a write token"
            for name in triggers(wf) if name == "pull_request_target"]


def permission_problems(wf: dict) -> list[str]:
    problems = []
    top = wf.get("permissions")
    if not isinstance(top, dict):
        problems.append(f"top-level permissions must be an explicit mapping, found {top!r}")
    else:
        problems += [f"top-level permission {scope}: {level} (writes belong to the job that needs them)"
                     for scope, level in top.items() if level not in ("read", "none")]
    for name, job in wf.get("jobs", {}).items():
        perms = job.get("permissions")
        if perms is None:
            continue
        if not isinstance(perms, dict):
            problems.append(f"job {name}: permissions {perms!r} (use an explicit mapping)")
            continue
        problems += [f"job {name}: {scope}: write is not needed by any job here"
                     for scope, level in perms.items() if level == "write" and scope not in ALLOWED_WRITES]
    return problems


def injection_problems(wf: dict) -> list[str]:
    problems = []
    for name, job in wf.get("jobs", {}).items():
        for script in scripts(job):
            for expression in EXPRESSION.findall(script):
                if UNTRUSTED.search(expression):
                    problems.append(f"job {name}: ${{{{{expression.strip()}}}}} inside a script (pass it through env:)")
    return problems


def pin_problems(wf: dict) -> list[str]:
    problems = []
    for name, job in wf.get("jobs", {}).items():
        for step in steps(job):
            uses = step.get("uses")
            if uses and not uses.startswith("./") and not PINNED.match(uses):
                problems.append(f"job {name}: {uses} is not pinned to a commit")
        if "uses" in job and not str(job["uses"]).startswith("./") and not PINNED.match(job["uses"]):
            problems.append(f"job {name}: reusable workflow {job['uses']} is not pinned")
    return problems


def checkout_problems(wf: dict) -> list[str]:
    return [f"job {name}: actions/checkout keeps the token in .git/config (persist-credentials: false)"
            for name, job in wf.get("jobs", {}).items() for step in steps(job)
            if str(step.get("uses", "")).startswith("actions/checkout@")
            and step.get("with", {}).get("persist-credentials") is not False]


def deploy_problems(wf: dict) -> list[str]:
    """pulumi up per stack: own concurrency group, never cancelled; prod behind its environment, after dev."""
    problems = []
    on = triggers(wf)
    branches = (on.get("push") or {}).get("branches")
    if branches != ["main"]:
        problems.append(f"deploy must run on push to main only, found push branches {branches!r}")
    if "pull_request" in on or "pull_request_target" in on:
        problems.append("deploy must not run for pull requests")
    ups: dict[str, str] = {}
    for name, job in wf.get("jobs", {}).items():
        for step in pulumi_steps(job, "up"):
            for stack in matrix_values(job, step.get("with", {}).get("stack-name", "")):
                ups[stack] = name
    if set(ups) != {"dev", "prod"}:
        problems.append(f"pulumi up must run for dev and prod, found {sorted(ups)}")
    groups = {}
    for stack, name in ups.items():
        job = wf["jobs"][name]
        concurrency = job.get("concurrency")
        if not isinstance(concurrency, dict) or stack not in str(concurrency.get("group", "")):
            problems.append(f"job {name}: needs a concurrency group naming stack {stack}")
            continue
        if concurrency.get("cancel-in-progress") is not False:
            problems.append(f"job {name}: cancel-in-progress must be false (never kill a deploy half-way)")
        groups[stack] = concurrency["group"]
        if environment_name(job) != stack:
            problems.append(f"job {name}: must run in the {stack!r} environment, found {environment_name(job)!r}")
    if len(set(groups.values())) != len(groups):
        problems.append(f"each stack needs its own concurrency group, found {groups}")
    if "prod" in ups and "dev" in ups:
        needs = wf["jobs"][ups["prod"]].get("needs", [])
        needs = [needs] if isinstance(needs, str) else needs
        if ups["dev"] not in needs:
            problems.append("prod must deploy after dev (needs: the dev job)")
    return problems


def preview_problems(wf: dict) -> list[str]:
    """PR: previews of dev and prod commented on the PR, from preview environments only; the PR's own checks."""
    problems = []
    if "pull_request" not in triggers(wf):
        problems.append("the PR workflow must run on pull_request")
    previews = set()
    for name, job in wf.get("jobs", {}).items():
        if environment_name(job) is not None:
            for env in matrix_values(job, environment_name(job)):
                if env in DEPLOY_ENVIRONMENTS:
                    problems.append(f"job {name}: a PR job must not use the deploy environment {env!r}")
        if pulumi_steps(job, "up") or pulumi_steps(job, "destroy"):
            problems.append(f"job {name}: a PR must never change a stack")
        for step in pulumi_steps(job, "preview"):
            stacks = matrix_values(job, step["with"].get("stack-name", ""))
            envs = matrix_values(job, environment_name(job) or "")
            if envs != [f"preview-{stack}" for stack in stacks]:
                problems.append(f"job {name}: the preview of {stacks} must run in {['preview-' + s for s in stacks]}"
                                f" (the read-only login), found {envs}")
            if str(step["with"].get("comment-on-pr")).lower() != "true":
                problems.append(f"job {name}: pulumi preview must comment on the PR (comment-on-pr: true)")
            previews.update(matrix_values(job, step["with"].get("stack-name", "")))
    if previews != {"dev", "prod"}:
        problems.append(f"pulumi preview must run for dev and prod, found {sorted(previews)}")
    runs = all_runs(wf)
    if "ci/report.py target" not in runs:
        problems.append("the PR must show appdb status and verify for each stack (ci/report.py target)")
    if "squawk" not in runs:
        problems.append("the PR must lint sql/ with squawk")
    if not re.search(r"ci/throwaway\.py(?=[^\n]*--state empty)(?=[^\n]*--state production)", runs):
        problems.append("the PR must apply and verify on a throwaway database from empty and from production")
    if "ci/report.py schema" not in runs:
        problems.append("the PR must show its schema change and run appdb schema --check (ci/report.py schema)")
    targets = [s for job in wf.get("jobs", {}).values() for s in scripts(job) if "ci/report.py target" in s]
    if not any("--diff-snapshot" in s for s in targets):
        problems.append("the PR must show whether dev and prod drifted from main's snapshot (--diff-snapshot)")
    return problems


def drift_problems(wf: dict) -> list[str]:
    problems = []
    schedule = triggers(wf).get("schedule") or []
    if not any(isinstance(entry, dict) and entry.get("cron") for entry in schedule):
        problems.append("drift must run on a schedule")
    checks = [name for name, job in wf.get("jobs", {}).items()
              if any("ci/report.py target" in s and "--inspect" in s and "--strict" in s for s in scripts(job))]
    if not checks:
        problems.append("drift must run appdb verify and inspect and fail when verification fails (--strict)")
    if not any("--diff-snapshot sql/schema.snapshot" in s for name in checks for s in scripts(wf["jobs"][name])):
        problems.append("drift must compare prod with the committed snapshot (appdb diff: --diff-snapshot)")
    for name in checks:
        if environment_name(wf["jobs"][name]) != "preview-prod":
            problems.append(f"job {name}: drift reads prod with the read-only login of the preview-prod environment")
    for name, job in wf.get("jobs", {}).items():
        env = environment_name(job)
        if env in DEPLOY_ENVIRONMENTS:
            problems.append(f"job {name}: drift reads prod with the read-only login, not the {env!r} environment")
    if not any("failure()" in str(job.get("if", "")) for job in wf.get("jobs", {}).values()):
        problems.append("a failed drift check must notify (a job with if: failure())")
    return problems


def holds_secrets(job: dict) -> bool:
    """A job that is handed any repository or environment secret."""
    return "secrets." in json.dumps(job)


def hashed_install_problems(wf: dict) -> list[str]:
    """A job that holds secrets installs only packages pinned by hash (requirements.lock)."""
    problems = []
    for name, job in wf.get("jobs", {}).items():
        if not holds_secrets(job):
            continue
        for script in scripts(job):
            for line in script.splitlines():
                if "pip install" in line and "--require-hashes -r requirements.lock" not in line:
                    problems.append(f"job {name}: {line.strip()!r} installs without hashes, with secrets in reach")
            if "bin/setup" in script:
                problems.append(f"job {name}: bin/setup installs requirements-dev.txt without hashes")
    return problems


CERT_VARIABLE = "vars.SUPABASE_ROOT_CERT"


def tls_problems(wf: dict) -> list[str]:
    """A job that connects verifies the server (verify-full) once Supabase's root certificate is configured."""
    problems = []
    for name, job in wf.get("jobs", {}).items():
        variables = job.get("env", {}) or {}
        if "PGHOST" not in variables:
            continue
        mode, root = str(variables.get("PGSSLMODE", "")), str(variables.get("PGSSLROOTCERT", ""))
        if CERT_VARIABLE not in mode or "verify-full" not in mode:
            problems.append(f"job {name}: PGSSLMODE {mode!r} is not verify-full when {CERT_VARIABLE} is set")
        if CERT_VARIABLE not in root:
            problems.append(f"job {name}: PGSSLROOTCERT does not point at the certificate from {CERT_VARIABLE}")
        writes = [i for i, step in enumerate(steps(job))
                  if CERT_VARIABLE in json.dumps(step.get("env", {})) and "$PGSSLROOTCERT" in str(step.get("run", ""))]
        connects = [i for i, step in enumerate(steps(job)) if ".venv/bin/python" in str(step.get("run", ""))
                    or "stack-config.sh" in str(step.get("run", "")) or step.get("with", {}).get("command")]
        if not writes or (connects and writes[0] > connects[0]):
            problems.append(f"job {name}: no step writes the root certificate to $PGSSLROOTCERT before connecting")
    return problems


COMMON_RULES = (trigger_problems, permission_problems, injection_problems, pin_problems, checkout_problems,
                hashed_install_problems, tls_problems)


# --- the workflows as they are -------------------------------------------------------------

def test_there_is_a_workflow_for_each_path_to_a_database(workflows):
    assert {"pr", "deploy", "drift"} <= set(workflows)


def test_every_workflow_is_valid_against_githubs_schema():
    result = subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.github-workflows", *map(str, workflow_paths())],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("rule", COMMON_RULES, ids=lambda rule: rule.__name__)
def test_every_workflow_keeps_the_common_rules(workflows, rule):
    problems = {name: rule(wf) for name, wf in workflows.items()}
    assert not any(problems.values()), problems


def test_deploy_runs_each_stack_alone_and_prod_behind_its_environment(workflows):
    assert deploy_problems(workflows["deploy"]) == []


def test_pull_request_previews_both_stacks_and_shows_what_preview_cannot(workflows):
    assert preview_problems(workflows["pr"]) == []


def test_drift_verifies_prod_daily_with_the_read_only_login_and_notifies(workflows):
    assert drift_problems(workflows["drift"]) == []


def test_scripts_the_workflows_call_exist_and_run(workflows):
    for wf in workflows.values():
        for script in re.findall(r"(?<![\w./-])ci/[\w.-]+", all_runs(wf)):
            path = ROOT / script
            assert path.is_file(), f"{script} is called by a workflow but does not exist"
            if path.suffix == ".sh":
                assert path.stat().st_mode & 0o111, f"{script} is not executable"
                assert subprocess.run(["sh", "-n", str(path)], check=False).returncode == 0


# --- each rule catches the mistake it is for ----------------------------------------------

def test_schema_validation_rejects_a_misspelt_key(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    stepz:\n      - run: echo hi\n")
    result = subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.github-workflows", str(broken)],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 1, result.stdout


def test_a_pull_request_target_trigger_is_caught(workflows):
    wf = copy.deepcopy(workflows["pr"])
    wf["on"]["pull_request_target"] = {"branches": ["main"]}
    assert trigger_problems(wf)


def test_write_permissions_beyond_commenting_are_caught(workflows):
    wf = copy.deepcopy(workflows["pr"])
    wf["permissions"] = {"contents": "write"}
    assert permission_problems(wf)
    wf = copy.deepcopy(workflows["pr"])
    wf["jobs"]["tests"]["permissions"] = {"contents": "write"}
    assert permission_problems(wf)
    wf = copy.deepcopy(workflows["pr"])
    del wf["permissions"]
    assert permission_problems(wf)
    wf["permissions"] = "write-all"
    assert permission_problems(wf)


@pytest.mark.parametrize("expression", [
    "github.event.pull_request.title",
    "github.event.pull_request.head.ref",
    "github.head_ref",
    "github.event.pull_request.body",
])
def test_untrusted_pull_request_input_in_a_script_is_caught(workflows, expression):
    wf = copy.deepcopy(workflows["pr"])
    wf["jobs"]["tests"]["steps"].append({"run": f'echo "${{{{ {expression} }}}}"'})
    assert injection_problems(wf)


def test_untrusted_input_passed_through_env_is_allowed(workflows):
    wf = copy.deepcopy(workflows["pr"])
    wf["jobs"]["tests"]["steps"].append(
        {"env": {"TITLE": "${{ github.event.pull_request.title }}"}, "run": 'echo "$TITLE"'})
    assert injection_problems(wf) == []


def test_an_action_pinned_to_a_tag_is_caught(workflows):
    wf = copy.deepcopy(workflows["pr"])
    wf["jobs"]["tests"]["steps"][0]["uses"] = "actions/checkout@v4"
    assert pin_problems(wf)


def test_a_deploy_that_could_overlap_or_skip_approval_is_caught(workflows):
    base = workflows["deploy"]
    prod = next(name for name, job in base["jobs"].items() if pulumi_steps(job, "up")
                and job["steps"] and "prod" in str(job.get("environment")))
    dev = next(name for name, job in base["jobs"].items() if pulumi_steps(job, "up") and name != prod)

    cancelled = copy.deepcopy(base)
    cancelled["jobs"][prod]["concurrency"]["cancel-in-progress"] = True
    no_group = copy.deepcopy(base)
    del no_group["jobs"][prod]["concurrency"]
    shared = copy.deepcopy(base)
    shared["jobs"][dev]["concurrency"]["group"] = "pulumi-dev-prod"
    shared["jobs"][prod]["concurrency"]["group"] = "pulumi-dev-prod"
    no_approval = copy.deepcopy(base)
    del no_approval["jobs"][prod]["environment"]
    parallel = copy.deepcopy(base)
    parallel["jobs"][prod]["needs"] = "tests"
    on_prs = copy.deepcopy(base)
    on_prs["on"]["pull_request"] = {}
    for broken in (cancelled, no_group, shared, no_approval, parallel, on_prs):
        assert deploy_problems(broken)


def test_a_preview_with_deploy_credentials_or_without_a_comment_is_caught(workflows):
    base = workflows["pr"]
    name = next(n for n, job in base["jobs"].items() if pulumi_steps(job, "preview"))
    deploy_env = copy.deepcopy(base)
    deploy_env["jobs"][name]["environment"] = "${{ matrix.stack }}"
    silent = copy.deepcopy(base)
    pulumi_steps(silent["jobs"][name], "preview")[0]["with"]["comment-on-pr"] = False
    dev_only = copy.deepcopy(base)
    dev_only["jobs"][name]["strategy"]["matrix"]["stack"] = ["dev"]
    no_env = copy.deepcopy(base)
    del no_env["jobs"][name]["environment"]
    for broken in (deploy_env, silent, dev_only, no_env):
        assert preview_problems(broken)


def test_a_drift_check_that_cannot_fail_or_notify_is_caught(workflows):
    base = workflows["drift"]
    lenient = copy.deepcopy(base)
    for job in lenient["jobs"].values():
        for step in steps(job):
            if "run" in step:
                step["run"] = step["run"].replace("--strict", "")
    silent = copy.deepcopy(base)
    silent["jobs"] = {n: j for n, j in silent["jobs"].items() if "failure()" not in str(j.get("if", ""))}
    unscheduled = copy.deepcopy(base)
    del unscheduled["on"]["schedule"]
    undiffed = copy.deepcopy(base)
    for job in undiffed["jobs"].values():
        for step in steps(job):
            if "run" in step:
                step["run"] = step["run"].replace("--diff-snapshot", "")
    for broken in (lenient, silent, unscheduled, undiffed):
        assert drift_problems(broken)


def test_a_pull_request_without_its_schema_change_or_the_stacks_drift_is_caught(workflows):
    for needle in ("ci/report.py schema", "--diff-snapshot"):
        broken = copy.deepcopy(workflows["pr"])
        for job in broken["jobs"].values():
            for step in steps(job):
                if "run" in step:
                    step["run"] = step["run"].replace(needle, "")
        assert preview_problems(broken), needle



def test_a_job_with_secrets_that_installs_without_hashes_is_caught(workflows):
    for name in ("deploy", "drift", "pr"):
        broken = copy.deepcopy(workflows[name])
        for job in broken["jobs"].values():
            for step in steps(job):
                if "run" in step:
                    step["run"] = step["run"].replace("--require-hashes -r requirements.lock", "-r requirements.txt")
        assert hashed_install_problems(broken), name
    with_setup = copy.deepcopy(workflows["deploy"])
    next(job for job in with_setup["jobs"].values() if holds_secrets(job))["steps"].append({"run": "bin/setup"})
    assert hashed_install_problems(with_setup)


def test_a_job_that_connects_without_verifying_the_server_is_caught(workflows):
    for name in ("deploy", "drift", "pr"):
        weak = copy.deepcopy(workflows[name])
        for job in weak["jobs"].values():
            if "PGHOST" in job.get("env", {}):
                job["env"]["PGSSLMODE"] = "require"
        assert tls_problems(weak), name
        unwritten = copy.deepcopy(workflows[name])
        for job in unwritten["jobs"].values():
            job["steps"] = [s for s in steps(job) if CERT_VARIABLE not in json.dumps(s.get("env", {}))]
        assert tls_problems(unwritten), name


# --- requirements.lock: what the jobs with secrets install ------------------------------------


def _pins(text: str) -> dict[str, str]:
    pins = {}
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s;\\]+)", line)
        if match:
            pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def test_the_lock_pins_every_runtime_requirement_at_its_version_and_hashes_every_package():
    wanted = _pins((ROOT / "requirements.txt").read_text())
    text = (ROOT / "requirements.lock").read_text()
    locked = _pins(text)
    assert wanted and all(locked.get(name) == version for name, version in wanted.items()), (
        "requirements.lock is behind requirements.txt: run ci/lock-requirements.sh and commit it")
    assert "psycopg-binary" in locked, "the [binary] extra's package is locked too"
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        if re.match(r"^[A-Za-z0-9]", block):
            assert "--hash=sha256:" in block, block.splitlines()[0]
    assert "ci/lock-requirements.sh" in text and "find-links" not in text and "index-url" not in text

# --- the scripts behind the workflows --------------------------------------------------------
