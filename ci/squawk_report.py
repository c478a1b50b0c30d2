"""Lints ``sql/`` with squawk and shows the findings where a reviewer looks.

    python ci/squawk_report.py --out squawk.md

Each finding becomes a GitHub annotation on its file and line (visible in the pull
request's "Files changed" tab), and the whole list a Markdown table (job summary and
``--out``). Exit 1 when there is any finding, 2 when squawk itself could not run.
squawk reads the project's ``.squawk.toml`` (excluded rules, each with its reason).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def squawk_binary() -> str:
    """The project's squawk (pinned in requirements-dev.txt), else the one beside this Python, else PATH's."""
    for candidate in (ROOT / ".venv" / "bin" / "squawk", Path(sys.executable).parent / "squawk"):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("squawk")
    if not found:
        raise SystemExit("squawk_report: error: squawk not found (pip install squawk-cli)")
    return found


def sql_files() -> list[str]:
    files = sorted((ROOT / "sql").glob("*.sql")) + sorted((ROOT / "sql" / "revert").glob("*.sql"))
    return [str(path.relative_to(ROOT)) for path in files]


def run_squawk(files: list[str]) -> tuple[list[dict], str]:
    """squawk's findings as dicts (line numbers 1-based), and its stderr."""
    if not files:
        return [], ""
    proc = subprocess.run([squawk_binary(), "--reporter", "json", *files], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    try:
        findings = json.loads(proc.stdout or "[]")
    except ValueError:
        raise SystemExit(f"squawk_report: error: squawk did not answer in JSON (exit {proc.returncode}): "
                         f"{(proc.stderr or proc.stdout).strip()[:500]}") from None
    if proc.returncode not in (0, 1):
        raise SystemExit(f"squawk_report: error: squawk failed (exit {proc.returncode}): {proc.stderr.strip()[:500]}")
    for finding in findings:
        # squawk counts lines from 0; GitHub and editors count from 1.
        finding["line"] = int(finding.get("line", 0)) + 1
        path = Path(finding.get("file", ""))
        if path.is_absolute():
            try:
                finding["file"] = str(path.relative_to(ROOT))
            except ValueError:
                pass
    return findings, proc.stderr


def annotation(finding: dict) -> str:
    level = "error" if finding.get("level", "").lower() == "error" else "warning"
    message = finding.get("message", "")
    if finding.get("help"):
        message += f" {finding['help']}"
    message = message.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return (f"::{level} file={finding.get('file')},line={finding['line']},"
            f"title=squawk {finding.get('rule_name')}::{message}")


def markdown(files: list[str], findings: list[dict]) -> str:
    heading = "### squawk on `sql/`\n\n"
    if not findings:
        return heading + f"No findings in {len(files)} file(s).\n"
    lines = ["| file | line | rule | message |", "|---|---|---|---|"]
    for f in findings:
        text = f"{f.get('message', '')} {f.get('help') or ''}".strip().replace("|", "\\|")
        lines.append(f"| `{f.get('file')}` | {f['line']} | `{f.get('rule_name')}` | {text} |")
    return heading + f"{len(findings)} finding(s) in {len(files)} file(s).\n\n" + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ci/squawk_report.py", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the Markdown to this file")
    args = parser.parse_args(argv)

    files = sql_files()
    findings, _ = run_squawk(files)
    for finding in findings:
        print(annotation(finding))
    text = markdown(files, findings)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as handle:
            handle.write(text + "\n")
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    if not summary and not args.out:
        sys.stdout.write(text)
    return 1 if findings else 0


if __name__ == "__main__":
    raise SystemExit(main())
