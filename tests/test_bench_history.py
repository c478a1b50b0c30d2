"""bench/history.py's own parts: the synthetic migrations, each tool's files, finding peers, the targets.

The benchmark itself never runs in the suite (it takes minutes and its peers come from
outside the project); these tests make sure what it measures is what it claims: the
migrations are valid for appdb and pass verify on top of the shipped ones (so a Pulumi
deploy of them does not fail), every tool gets the same SQL, and a missing peer is
skipped with its pinned install command.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from appdb.migrate.files import discover
from tests.helpers import ROOT

_spec = importlib.util.spec_from_file_location("bench_history", ROOT / "bench" / "history.py")
history = importlib.util.module_from_spec(_spec)
sys.modules["bench_history"] = history  # dataclasses look their module up by name
_spec.loader.exec_module(history)


def app_tables(db) -> list[str]:
    return [row[0] for row in db.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'app' AND tablename LIKE 'bench%' ORDER BY 1")]


def test_synthetic_migrations_after_the_shipped_ones_apply_pass_verify_and_revert(db, tmp_path):
    project, total = history.pulumi_project(tmp_path, 3)
    shipped = discover(ROOT / "sql")
    ids = [m.id for m in discover(project / "sql")]
    assert total == len(shipped) + 3 and len(ids) == total
    assert ids[: len(shipped)] == [m.id for m in shipped]
    assert [int(i) for i in ids[len(shipped):]] == [int(shipped[-1].id) + k for k in (1, 2, 3)]

    applied = db.run_cli("apply", sql_dir=project / "sql")
    assert applied.returncode == 0, applied.stderr
    assert len(app_tables(db)) == 3
    verified = db.run_cli("verify", sql_dir=project / "sql")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    reverted = db.run_cli("revert", ids[-1], "--allow-data-loss", sql_dir=project / "sql")
    assert reverted.returncode == 0, reverted.stderr
    assert len(app_tables(db)) == 2


def test_psql_one_transaction_file_makes_every_table_and_nothing_when_one_fails(db, tmp_path):
    migrations = history.synthetic(4)
    history.write_psql(tmp_path / "ok", migrations)
    target = history.Target("127.0.0.1", db.cluster.port, db.name, db.cluster.password())
    psql = history.locate(history.TOOLS[0], tmp_path / "no-peers")[0]
    env = history.TOOLS[0].environment(target)
    history.timed(history._psql_command(psql, tmp_path / "ok", target), env, tmp_path)
    assert len(app_tables(db)) == 4
    # The same file again fails on the first table, and -1 leaves nothing half done.
    with pytest.raises(RuntimeError, match="already exists"):
        history.timed(history._psql_command(psql, tmp_path / "ok", target), env, tmp_path)
    assert len(app_tables(db)) == 4


@pytest.mark.parametrize("tool", history.TOOLS, ids=lambda t: t.name)
def test_no_tool_gets_the_password_on_its_command_line_only_in_its_environment(tool, tmp_path, monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "the-callers-own")
    target = history.Target("127.0.0.1", 5999, "bench", "Pw3x-Kq7a/9")
    argv = " ".join((tool.noop or tool.command)("exe", tmp_path, target) + tool.command("exe", tmp_path, target))
    assert "Pw3x" not in argv
    env = tool.environment(target)
    assert any("Pw3x-Kq7a" in value or "Pw3x-Kq7a%2F9" in value for value in env.values())
    assert "the-callers-own" not in env.values()


@pytest.mark.parametrize("tool", history.TOOLS, ids=lambda t: t.name)
def test_every_tool_gets_each_migration_forward_sql_exactly_once(tool, tmp_path):
    migrations = history.synthetic(3)
    tool.write(tmp_path, migrations)
    text = "".join(p.read_text() for p in sorted(tmp_path.rglob("*.sql")) if "revert" not in p.parts
                   and "verify" not in p.parts and not p.name.endswith((".down.sql", ".rollback.sql")))
    for m in migrations:
        assert text.count(m.forward) == 1, (tool.name, m.id)


def test_sqitch_plan_lists_each_change_in_order(tmp_path):
    history.write_sqitch(tmp_path, history.synthetic(3))
    plan = (tmp_path / "sqitch.plan").read_text().splitlines()
    assert plan[:2] == ["%syntax-version=1.0.0", "%project=bench"]
    assert [line.split()[0] for line in plan[3:]] == ["bench_0001", "bench_0002", "bench_0003"]


def test_a_missing_peer_is_skipped_with_its_pinned_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    goose = next(t for t in history.TOOLS if t.name == "goose")
    exe, why = history.locate(goose, tmp_path / "peers")
    assert exe is None
    assert "goose/v3/cmd/goose@v3.30.1" in why and str(tmp_path / "peers") in why


def test_a_peer_in_the_peers_folder_is_found_before_path(tmp_path, monkeypatch):
    (tmp_path / "peers").mkdir()
    (tmp_path / "path").mkdir()
    for folder in ("peers", "path"):
        fake = tmp_path / folder / "dbmate"
        fake.write_text("#!/bin/sh\nexit 0\n")
        fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path / "path") + os.pathsep + os.environ["PATH"])
    dbmate = next(t for t in history.TOOLS if t.name == "dbmate")
    assert history.locate(dbmate, tmp_path / "peers") == (str(tmp_path / "peers" / "dbmate"), "")


def test_pulumi_targets_take_the_cost_per_extra_migration_from_the_smallest_and_largest_sizes():
    def row(extra: int, up: float, destroy: float) -> dict:
        return {"median": {"first up": up, "no-op preview": 2.0, "no-op up": 1.0, "destroy": destroy,
                           "appdb apply": 0.3}}

    targets = {t["target"]: t for t in history.pulumi_targets({"rows": {0: row(0, 4.0, 3.0), 100: row(100, 9.0, 4.0)}})}
    assert targets["`up` cost per extra migration <= 50 ms"]["measured"] == pytest.approx(50.0)
    assert targets["`up` cost per extra migration <= 50 ms"]["met"] is True
    assert targets["`destroy` cost per extra migration <= 50 ms"]["measured"] == pytest.approx(10.0)
    assert targets["first `up`, shipped + 100 migrations <= 8 s"]["met"] is False
    assert targets["no-op `preview`, shipped migrations <= 1.2 s"]["met"] is False
    assert targets["no-op `up`, shipped migrations <= 1.2 s"]["met"] is True


def test_cli_targets_compare_appdb_with_psql_and_the_go_tools_and_skip_what_was_not_measured():
    table = {"apply": {"appdb": {100: 0.6}, "psql -1": {100: 0.5}, "goose": {100: 0.55}}}
    shipped = {"median": {"no-op apply": 0.05, "apply --only 030": 0.07, "status": 0.06, "verify": 0.2}}
    targets = {t["target"]: t for t in history.cli_targets(table, shipped)}
    assert targets["`appdb apply` of 100 <= 1.2x psql -1"]["met"] is True
    assert targets["`appdb apply` of 100 ahead of goose (0.60 s, goose 0.55 s; the ratio per round)"]["met"] is False
    assert not any("dbmate" in name for name in targets)
    assert targets["`no-op apply`, shipped schema <= 60 ms"]["met"] is True
    assert targets["`apply --only 030`, shipped schema <= 60 ms"]["met"] is False
    assert targets["`status`, shipped schema <= 60 ms"]["met"] is True
    assert targets["`verify`, shipped schema <= 100 ms"]["met"] is False


def test_apply_with_group_is_measured_as_a_tool_of_its_own_and_held_to_the_same_targets():
    tools = {tool.name: tool for tool in history.TOOLS}
    target = history.Target("127.0.0.1", 5432, "db", "secret")
    grouped = tools["appdb --group"].command("bin/appdb", Path("/m"), target)
    assert grouped == [*tools["appdb"].command("bin/appdb", Path("/m"), target), "--group"]
    assert tools["appdb --group"].noop("bin/appdb", Path("/m"), target)[-1] != "--group"
    table = {"apply": {"appdb": {1000: 3.0}, "appdb --group": {1000: 1.7}, "psql -1": {1000: 1.5},
                       "goose": {1000: 2.8}}}
    targets = {t["target"]: t for t in history.cli_targets(table, {})}
    assert targets["`appdb apply` of 1000 <= 1.2x psql -1"]["met"] is False
    assert targets["`appdb apply --group` of 1000 <= 1.2x psql -1"]["met"] is True
    assert targets["`appdb apply --group` of 1000 ahead of goose (1.70 s, goose 2.80 s; the ratio per round)"][
        "met"] is True
    assert history._slug("appdb --group") == "appdb_group" and history._slug("psql -1") == "psql_1"



def test_ratios_pair_the_rounds_so_a_slow_stretch_of_the_machine_does_not_decide_them():
    """Round 1 ran at the machine's fast pace, rounds 2 and 3 at its slow one: psql's median is a
    slow round, appdb's a fast one's neighbour. Round by round appdb takes 1.5x psql, not 0.75x."""
    samples = {"appdb": {100: [0.3, 0.6, 0.6]}, "psql -1": {100: [0.2, 0.4, 0.4]}, "goose": {100: [0.25, 0.5, 0.5]}}
    table = {"apply": {"appdb": {100: 0.3}, "psql -1": {100: 0.4}, "goose": {100: 0.5}},
             "samples": {"apply": samples}}
    targets = {t["target"]: t for t in history.cli_targets(table, {})}
    assert targets["`appdb apply` of 100 <= 1.2x psql -1"]["measured"] == pytest.approx(1.5)
    assert targets["`appdb apply` of 100 <= 1.2x psql -1"]["met"] is False
    ahead = targets["`appdb apply` of 100 ahead of goose (0.30 s, goose 0.50 s; the ratio per round)"]
    assert ahead["measured"] == pytest.approx(1.2) and ahead["met"] is False
    # A failed round leaves the samples unpaired: the medians decide, as before. Keys may be strings (JSON).
    table["samples"]["apply"]["psql -1"] = {"100": [0.2, 0.4]}
    targets = {t["target"]: t for t in history.cli_targets(table, {})}
    assert targets["`appdb apply` of 100 <= 1.2x psql -1"]["measured"] == pytest.approx(0.75)


def test_the_served_group_warms_a_server_of_the_benchmark_s_own_before_its_timed_apply(tmp_path, monkeypatch):
    served = next(t for t in history.TOOLS if t.name == history.SERVED_GROUP)
    target = history.Target("127.0.0.1", 5432, "db", "secret")
    assert served.command("bin/appdb", Path("/m"), target) == [
        *history._appdb_group_command("bin/appdb", Path("/m"), target), "--fork-server"]
    assert served.noop("bin/appdb", Path("/m"), target)[-1] == "--fork-server"
    calls: list[tuple[list[str], str | None]] = []

    def fake_timed(command, env, cwd, timeout=0):
        calls.append((command, env.get("XDG_RUNTIME_DIR")))
        return 0.1

    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/the-callers")
    monkeypatch.setattr(history, "timed", fake_timed)
    monkeypatch.setattr(history, "fresh_database", lambda cluster, name: target)
    monkeypatch.setattr(history, "bench_tables", lambda cluster, name: 3)
    monkeypatch.setattr(history, "drop_database", lambda cluster, name: None)
    applied, idle = history.cli_round(None, served, "bin/appdb", Path("/m"), 3, 2, tmp_path / "runtime")
    assert (applied, idle) == (0.1, [0.1, 0.1])
    # First the untimed warm-up (a status through the server), then the timed apply, then the no-ops:
    # all through one private runtime folder, never the caller's.
    assert [c[0][1] for c in calls] == ["status", "apply", "apply", "apply"]
    assert {c[1] for c in calls} == {str(tmp_path / "runtime")}
    assert (tmp_path / "runtime").stat().st_mode & 0o777 == 0o700
    table = {"apply": {history.SERVED_GROUP: {100: 0.3}, "psql -1": {100: 0.3}}}
    assert any(t["target"].endswith("server warm` of 100 <= 1.2x psql -1") and t["met"]
               for t in history.cli_targets(table, {}))
    # A tool with no warm-up runs with its own environment, as before.
    calls.clear()
    plain = next(t for t in history.TOOLS if t.name == "appdb --group")
    history.cli_round(None, plain, "bin/appdb", Path("/m"), 3, 1, tmp_path / "runtime")
    assert [c[0][1] for c in calls] == ["apply", "apply"] and calls[0][1] == "/run/user/the-callers"


def test_saved_results_load_with_their_sizes_as_numbers_and_the_last_file_wins(tmp_path):
    older, newer = tmp_path / "older.json", tmp_path / "newer.json"
    older.write_text(json.dumps({"pulumi": {"rows": {"100": {"median": {"first up": 38.0}}}},
                                 "cli": {"apply": {"appdb": {"100": 0.9}}}, "shipped": {"median": {"status": 0.2}}}))
    newer.write_text(json.dumps({"pulumi": {}, "cli": {"apply": {"appdb": {"100": 0.7}}},
                                 "shipped": {"median": {"status": 0.05}}}))
    pulumi_table, cli_table, shipped = history.load_saved([older, newer])
    assert pulumi_table["rows"][100]["median"]["first up"] == 38.0
    assert cli_table["apply"]["appdb"][100] == 0.7
    assert shipped["median"]["status"] == 0.05


def test_a_failing_tool_is_reported_without_the_clusters_password(tmp_path, monkeypatch):
    monkeypatch.setattr(history, "SECRETS", {"Pw-3x/9"})
    failing = ["sh", "-c", "echo 'cannot connect to postgres://u:Pw-3x%2F9@h/db (password Pw-3x/9)' >&2; exit 3"]
    with pytest.raises(RuntimeError) as failed:
        history.timed(failing, history.clean_env(), tmp_path)
    assert "exit 3" in str(failed.value) and "[password]" in str(failed.value)
    assert "Pw-3x" not in str(failed.value)


def test_tools_can_be_limited_to_the_ones_asked_for():
    args = history.parse(["--tables", "cli", "--tools", "psql -1", "appdb"])
    assert args.tools == ["psql -1", "appdb"]
    with pytest.raises(SystemExit):
        history.parse(["--tools", "liquibase"])


def test_each_revert_is_timed_by_the_shim_and_pulumi_s_time_is_what_lies_between_two(tmp_path):
    """--time-deletes: the shim in the copy's bin/appdb logs each command; a revert's time is its
    own, the time between two reverts is Pulumi's; other commands break the chain."""
    project = tmp_path / "project"
    (project / "bin").mkdir(parents=True)
    (project / "bin" / "appdb").write_text("#!/bin/sh\necho \"ran $*\"\nexit 3\n")
    (project / "bin" / "appdb").chmod(0o755)
    log_file = tmp_path / "commands.log"
    history.time_commands(project, log_file)
    done = subprocess.run([str(project / "bin" / "appdb"), "revert", "031", "--fork-server"], capture_output=True,
                          text=True, check=False)
    assert (done.returncode, done.stdout) == (3, "ran revert 031 --fork-server\n")  # the real script, its status
    start, end = log_file.read_text().splitlines()
    assert start.startswith("start ") and start.endswith(" revert") and end.startswith("end ")

    lines = ["start 10.000 revert", "end 10.040", "start 10.050 revert", "end 10.090",
             "start 10.100 verify", "end 10.200", "start 10.300 revert", "end 10.330"]
    timings = history.revert_timings(lines)
    assert timings["reverts"] == 3
    assert timings["command_ms"] == pytest.approx(40.0)
    assert timings["between_ms"] == pytest.approx(10.0)  # only 10.040 -> 10.050: verify came between the others
    assert history.revert_timings([]) == {"reverts": 0, "command_ms": None, "between_ms": None}


def test_the_machine_s_pace_is_timed_and_printed_beside_each_size(capsys):
    """Whole runs move with a shared machine (the same code's no-op preview took half as long
    again within a morning): each size carries a fixed piece of work, timed, to compare runs by."""
    pace = history.machine_pace(starts=3)
    assert pace["python_start_ms"] > 0 and pace["sha256_16mb_ms"] > 0
    table = {"pulumi": "v3.276.0", "rows": {0: {"migrations": 4, "errors": [], "median": {}, "pace": pace}}}
    history.print_pulumi(table, [])
    out = capsys.readouterr().out
    assert "the machine's pace before each size" in out
    assert f"4 migrations: Python starts in {pace['python_start_ms']:.1f} ms" in out
