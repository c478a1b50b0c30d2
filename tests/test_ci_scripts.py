"""The ci/ scripts the workflows call: the PR report, squawk annotations, the read-only login, throwaway databases.

The workflows' own rules are in test_workflows.py; these run the scripts themselves.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import documented_readonly_login_sql

ROOT = Path(__file__).resolve().parent.parent
CI = ROOT / "ci"


def _load(name: str):
    """A script from ci/ as a module, without putting ci/ on everyone's sys.path."""
    spec = importlib.util.spec_from_file_location(f"ci_{name}", CI / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


report = _load("report")
squawk_report = _load("squawk_report")


def _result(data: dict | None, returncode: int = 0) -> report.Result:
    return report.Result(("verify", "--json"), returncode, data, "")


def test_report_says_a_pending_only_failure_is_the_pull_requests_own_migration():
    status = _result({"migrations": [{"id": "027", "name": "m", "state": "applied"},
                                     {"id": "029", "name": "n", "state": "pending"}]})
    verify = _result({"ok": False, "checks": [{"name": "ledger", "ok": False, "detail": "pending: 029"},
                                              {"name": "memberships_user_fk", "ok": True, "detail": ""}]}, 1)
    ok, sentence = report.verdict(status, verify)
    assert not ok and "029" in sentence and "pulumi up" in sentence


def test_report_names_a_real_verification_failure():
    status = _result({"migrations": [{"id": "027", "name": "m", "state": "applied"}]})
    verify = _result({"ok": False, "checks": [{"name": "memberships_user_unique", "ok": False,
                                               "detail": "2: a | b"}]}, 1)
    ok, sentence = report.verdict(status, verify)
    assert not ok and "memberships_user_unique" in sentence
    assert "a \\| b" in report.verify_markdown(verify)  # a pipe in catalog text cannot break the table


def test_report_shows_drift_as_a_table_and_a_behind_ledger_as_not_compared():
    drifted = report.Result(("diff", "--json"), 1, {
        "status": "drift", "counts": {"missing": 0, "extra": 1, "different": 0}, "ignored": [],
        "differences": [{"change": "extra", "identity": "privilege table app.memberships TO anon",
                         "snapshot": None, "live": "SELECT"}]}, "")
    text = report.diff_markdown(drifted, "`schema.snapshot`")
    assert "**Schema drift**" in text and "| extra | `privilege table app.memberships TO anon` |  | SELECT |" in text
    assert not report.drift_holds(drifted)
    behind = report.Result(("diff", "--json"), 1, {"status": "behind", "pending": ["029"]}, "")
    assert report.diff_markdown(behind, "main").startswith("Not compared: the ledger is behind main; 029")
    assert not report.drift_holds(behind)
    assert report.drift_holds(None) and report.drift_holds(report.Result((), 0, {"status": "match"}, ""))


def test_report_strict_exits_1_when_the_database_is_unreachable(tmp_path, monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
    out = tmp_path / "report.md"
    assert report.main(["target", "--title", "prod", "--strict", "--out", str(out)]) == 1
    assert "could not run" in out.read_text()


def test_squawk_findings_become_annotations_on_1_based_lines(tmp_path, monkeypatch):
    bad = tmp_path / "sql"
    bad.mkdir()
    (bad / "001_bad.sql").write_text("CREATE INDEX i ON app.t (a);\n")
    monkeypatch.setattr(squawk_report, "ROOT", tmp_path)
    findings, _ = squawk_report.run_squawk(squawk_report.sql_files())
    assert findings and all(f["line"] == 1 for f in findings)
    assert squawk_report.annotation(findings[0]).startswith("::warning file=sql/001_bad.sql,line=1,")


def test_the_projects_sql_has_no_squawk_findings():
    findings, _ = squawk_report.run_squawk(squawk_report.sql_files())
    assert findings == []




def test_the_documented_read_only_login_runs_status_verify_and_inspect_and_changes_nothing(db):
    from psycopg import conninfo

    db.load_state("production")
    assert db.run_cli("apply").returncode == 0
    with db.connect() as conn:
        conn.execute("DROP ROLE IF EXISTS appdb_readonly")  # roles are cluster-wide
        conn.execute(documented_readonly_login_sql("read-only-test-password"))
    params = {**db.tcp_params, "user": "appdb_readonly", "password": "read-only-test-password"}
    readonly = {"DATABASE_URL": conninfo.make_conninfo(**params)}
    before = db.snapshot()

    status = db.run_cli("status", "--json", env=readonly)
    assert status.returncode == 0, status.stderr
    assert {m["id"]: m["state"] for m in json.loads(status.stdout)["migrations"]} == dict.fromkeys(
        ("027", "028", "029", "030"), "applied")
    verify = db.run_cli("verify", "--json", env=readonly)
    assert verify.returncode == 0, verify.stderr
    inspect = db.run_cli("inspect", "--json", env=readonly)
    assert inspect.returncode == 0, inspect.stderr
    # It can read the catalog, not change the database.
    revert = db.run_cli("revert", "030", env=readonly)
    assert revert.returncode != 0
    assert db.snapshot() == before


def test_throwaway_database_applies_and_verifies_from_empty_and_from_production(tmp_path, monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    out = tmp_path / "throwaway.md"
    result = subprocess.run(
        [sys.executable, str(CI / "throwaway.py"), "--state", "empty", "--state", "production", "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=300, check=False,
    )
    text = out.read_text()
    assert result.returncode == 0, result.stderr + text
    assert text.count("**Applied and verified.**") == 2
    assert text.count("Applied nothing, as it must.") == 2
