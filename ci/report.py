"""Runs ``bin/appdb`` against a target and writes what it found as Markdown.

Used by the workflows in ``.github/workflows``:

* ``python ci/report.py target --title dev --out dev.md``: the pull request's view of a
  stack's database *now* (command resources do not run on ``pulumi preview``, so this is
  how a reviewer sees which migrations are pending there and whether verification holds);
* ``python ci/report.py target --title prod --inspect --strict --diff-snapshot sql/schema.snapshot``:
  the daily drift check, which fails when verification fails or the schema differs from the
  snapshot (``appdb diff``);
* ``python ci/report.py schema --base HEAD^1 --out schema.md``: a pull request's schema change
  (the git diff of ``sql/schema.snapshot`` against the base branch) and whether the snapshot
  is up to date (``appdb schema --check``, which fails the job when it is not).

The connection comes from the environment exactly as for ``appdb`` itself
(``DATABASE_URL`` or libpq's ``PG*`` variables): the workflows set them from the
read-only login's secrets. The Markdown is appended to ``$GITHUB_STEP_SUMMARY`` when
that is set, and written to ``--out`` for a pull-request comment.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPDB = ROOT / "bin" / "appdb"
TIMEOUT_S = 300


@dataclass(frozen=True)
class Result:
    """One ``appdb`` run: its exit code, its parsed ``--json`` output if any, and stderr."""

    args: tuple[str, ...]
    returncode: int
    data: dict | None
    stderr: str

    @property
    def command(self) -> str:
        return "appdb " + " ".join(self.args)


def run_appdb(*args: str, env: dict[str, str] | None = None) -> Result:
    """``bin/appdb ARGS`` from the project root; stdout is parsed as JSON when it is JSON."""
    try:
        proc = subprocess.run(
            [str(APPDB), *args], cwd=ROOT, env=env, capture_output=True, text=True,
            timeout=TIMEOUT_S, check=False,
        )
    except subprocess.TimeoutExpired:
        return Result(tuple(args), 124, None, f"appdb: error: no answer within {TIMEOUT_S} s")
    return Result(tuple(args), proc.returncode, parse_json(proc.stdout), proc.stderr.strip())


def parse_json(text: str) -> dict | None:
    """The JSON document in ``text``: the whole of it, or else its last line that parses."""
    text = text.strip()
    if not text:
        return None
    try:
        value = json.loads(text)
        return value if isinstance(value, dict) else {"value": value}
    except ValueError:
        pass
    for line in reversed(text.splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


# --- Markdown -------------------------------------------------------------------------

def cell(value: object) -> str:
    """A value made safe for one Markdown table cell (catalog text can hold anything)."""
    text = "" if value is None else str(value)
    for char, escaped in (("\\", "\\\\"), ("|", "\\|"), ("<", "&lt;"), (">", "&gt;"), ("`", "'")):
        text = text.replace(char, escaped)
    return " ".join(text.split())


def failure_markdown(result: Result) -> str:
    message = result.stderr.splitlines()[-1] if result.stderr else f"exit {result.returncode}"
    return f"`{result.command}` failed (exit {result.returncode}): {cell(message)}\n"


def status_markdown(result: Result) -> str:
    """The migrations table from ``appdb status --json``."""
    if result.data is None or "migrations" not in result.data:
        return failure_markdown(result)
    rows = result.data["migrations"]
    if not rows:
        return "No migrations found.\n"
    lines = ["| id | name | state | applied at |", "|---|---|---|---|"]
    for row in rows:
        state = row.get("state", "?")
        shown = state if state == "applied" else f"**{state}**"
        lines.append(f"| {cell(row.get('id'))} | {cell(row.get('name'))} | {shown} | {cell(row.get('applied_at') or '')} |")
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.get("state", "?")] = counts.get(row.get("state", "?"), 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    return "\n".join(lines) + f"\n\n{summary}.\n"


def pending_ids(status: Result) -> list[str]:
    if status.data is None:
        return []
    return [row["id"] for row in status.data.get("migrations", []) if row.get("state") == "pending"]


def verify_markdown(result: Result) -> str:
    """The checks table from ``appdb verify --json``."""
    if result.data is None or "checks" not in result.data:
        return failure_markdown(result)
    lines = ["| check | holds | detail |", "|---|---|---|"]
    for check in result.data["checks"]:
        mark = "yes" if check.get("ok") else "**NO**"
        lines.append(f"| {cell(check.get('name'))} | {mark} | {cell(check.get('detail'))} |")
    return "\n".join(lines) + "\n"


def failing_checks(verify: Result) -> list[str]:
    if verify.data is None:
        return ["(verify did not run)"]
    return [c.get("name", "?") for c in verify.data.get("checks", []) if not c.get("ok")]


def inspect_markdown(result: Result) -> str:
    """Findings from ``appdb inspect --json`` first, then the whole inventory folded away."""
    if result.data is None:
        return failure_markdown(result)
    findings = result.data.get("findings", [])
    lines = []
    if findings:
        lines.append("Findings:\n")
        for finding in findings:
            if isinstance(finding, dict) and "kind" in finding:
                lines.append(f"- **{cell(finding['kind'])}**: {cell(finding.get('detail'))}")
            else:
                lines.append(f"- {cell(json.dumps(finding, sort_keys=True))}")
    else:
        lines.append("No findings.")
    inventory = json.dumps(result.data, indent=2, sort_keys=True)
    lines.append(f"\n<details><summary>Inventory</summary>\n\n```json\n{inventory}\n```\n</details>\n")
    return "\n".join(lines) + "\n"


def diff_markdown(result: Result, label: str) -> str:
    """``appdb diff --json``: no drift, not compared (ledger behind or ahead), or each difference."""
    data = result.data
    if data is None or "status" not in data:
        return failure_markdown(result)
    status = data["status"]
    lines = []
    if status == "match":
        lines.append(f"No drift: the schema matches {label} ({data.get('objects', 0)} objects).")
    elif status == "behind":
        lines.append(f"Not compared: the ledger is behind {label}; {', '.join(map(cell, data.get('pending', [])))} "
                     "not applied here yet (pending migrations are not drift).")
    elif status == "ahead":
        lines.append(f"Not compared: this database has applied {', '.join(map(cell, data.get('unknown', [])))}, "
                     f"which {label} was not built from.")
    else:
        counts = ", ".join(f"{n} {change}" for change, n in data.get("counts", {}).items() if n)
        lines += [f"**Schema drift** from {label}: {counts}.\n", "| change | object | snapshot | live |",
                  "|---|---|---|---|"]
        for d in data.get("differences", []):
            lines.append(f"| {cell(d.get('change'))} | `{cell(d.get('identity'))}` | {cell(d.get('snapshot'))} "
                         f"| {cell(d.get('live'))} |")
    if data.get("ignored"):
        lines.append("\nIgnored (sql/drift-ignore.toml): "
                     + "; ".join(f"`{cell(i.get('identity'))}` ({cell(i.get('reason'))})" for i in data["ignored"]))
    return "\n".join(lines) + "\n"


def drift_holds(diff: Result | None) -> bool:
    return diff is None or (diff.data is not None and diff.data.get("status") == "match")


def schema_report(base: str, snapshot: str = "sql/schema.snapshot") -> tuple[bool, str]:
    """The snapshot's change against ``base`` (a git revision), and ``appdb schema --check``."""
    check = run_appdb("schema", "--check", "--json")
    changed = subprocess.run(["git", "diff", "--no-color", base, "--", snapshot], cwd=ROOT,
                             capture_output=True, text=True, check=False)
    ok = check.returncode == 0
    parts = ["### Schema change\n"]
    if check.data is None:
        parts.append(failure_markdown(check))
    elif ok:
        parts.append(f"`{snapshot}` is up to date with the migrations (`appdb schema --check`).\n")
    else:
        parts.append(f"**`{snapshot}` is stale**: run `bin/appdb schema --write` and commit it. What it "
                     "should say:\n\n```diff\n" + "\n".join(check.data.get("diff", [])) + "\n```\n")
    if changed.returncode != 0:
        parts.append(f"(no git diff against `{cell(base)}`: {cell(changed.stderr.strip())})\n")
    elif changed.stdout.strip():
        parts.append(f"What this pull request changes in the schema (`{snapshot}` against the base branch):\n\n"
                     f"```diff\n{changed.stdout.strip()}\n```\n")
    else:
        parts.append("This pull request does not change the schema.\n")
    return ok, "\n".join(parts)


def verdict(status: Result, verify: Result) -> tuple[bool, str]:
    """Whether verification holds, and one sentence saying so (pending-only is expected in a PR)."""
    if verify.data is None:
        return False, "verification could not run: " + failure_markdown(verify).strip()
    if verify.data.get("ok"):
        return True, "Verification holds."
    failing = failing_checks(verify)
    pending = pending_ids(status)
    if failing == ["ledger"] and pending:
        return False, (
            "Verification holds except for the ledger, which lists the pending migration(s) "
            f"{', '.join(pending)}: `pulumi up` applies them after the merge."
        )
    return False, f"**Verification fails**: {', '.join(failing)}."


def target_report(title: str, with_inspect: bool, diff_snapshot: Path | None = None,
                  diff_ignore: Path | None = None) -> tuple[bool, str]:
    """Status and verify (and inspect, and the schema against a snapshot) on the environment's database."""
    status = run_appdb("status", "--json")
    verify = run_appdb("verify", "--json")
    ok, sentence = verdict(status, verify)
    diff = None
    if diff_snapshot is not None and diff_snapshot.is_file():
        args = ["diff", "--json", "--snapshot", str(diff_snapshot)]
        if diff_ignore is not None and diff_ignore.is_file():
            args += ["--ignore", str(diff_ignore)]
        diff = run_appdb(*args)
        if not drift_holds(diff):
            ok = False
            if diff.data is not None and diff.data.get("status") == "drift":
                sentence += f" **The schema has drifted** from `{diff_snapshot.name}`."
    parts = [
        f"### appdb on `{cell(title)}`\n",
        sentence + "\n",
        "#### Migrations\n",
        status_markdown(status),
        "#### Verification\n",
        verify_markdown(verify),
    ]
    if diff_snapshot is not None:
        parts.append("#### Schema drift (`appdb diff`)\n")
        parts.append(diff_markdown(diff, f"`{diff_snapshot.name}`") if diff is not None
                     else f"No snapshot to compare with (`{cell(diff_snapshot)}` is missing).\n")
    if with_inspect:
        parts += ["#### Inspection\n", inspect_markdown(run_appdb("inspect", "--json"))]
    return ok, "\n".join(parts)


def write_outputs(markdown: str, out: Path | None) -> None:
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as handle:
            handle.write(markdown + "\n")
    if out is not None:
        out.write_text(markdown, encoding="utf-8")
    if not summary and out is None:
        sys.stdout.write(markdown)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ci/report.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    target = sub.add_parser("target", help="status and verify (and inspect) against one database")
    target.add_argument("--title", required=True, help="the stack's name, for the heading")
    target.add_argument("--inspect", action="store_true", help="add appdb inspect's findings")
    target.add_argument("--strict", action="store_true", help="exit 1 when verification fails")
    target.add_argument("--out", type=Path, help="also write the Markdown to this file")
    target.add_argument("--diff-snapshot", type=Path, metavar="FILE",
                        help="also compare the schema with this snapshot (appdb diff); drift counts as a failure")
    target.add_argument("--diff-ignore", type=Path, metavar="FILE", help="the ignore list for that comparison")
    schema = sub.add_parser("schema", help="the pull request's schema change, and appdb schema --check")
    schema.add_argument("--base", required=True, help="the git revision to diff the snapshot against")
    schema.add_argument("--out", type=Path, help="also write the Markdown to this file")
    args = parser.parse_args(argv)

    if args.command == "schema":
        ok, markdown = schema_report(args.base)
        write_outputs(markdown, args.out)
        if not ok:
            print("::error title=stale schema snapshot::sql/schema.snapshot does not match the migrations: "
                  "run bin/appdb schema --write and commit it")
            return 1
        return 0

    ok, markdown = target_report(args.title, args.inspect, args.diff_snapshot, args.diff_ignore)
    write_outputs(markdown, args.out)
    if not ok:
        print(f"appdb on {args.title}: verification does not hold or the schema has drifted", file=sys.stderr)
        if args.strict:
            # A workflow command, so the failure shows as an annotation on the run.
            print(f"::error title=appdb drift on {args.title}::verification does not hold or the schema differs "
                  "from the snapshot: see the job summary")
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
