"""Applies and verifies every migration on a throwaway Supabase-shaped PostgreSQL.

    python ci/throwaway.py --state empty --state production --out throwaway.md

For each starting state, a brand-new Supabase-shaped cluster from
appdb/local/throwaway.py (the same shape and major version as ``bin/appdb local up``, in a
temporary folder, on a free port, so it never meets the developer's own ``.appdb/local``):

1. appdb/schema/fresh.py's ``program_baseline``: the ``app`` schema, the group roles and
   the grants, as the Pulumi program creates them, from the access plan;
2. ``production`` only: ``tests/states/production.sql`` and ``production_billing.sql``
   build the production state (``app.memberships`` with both unique constraints, the older
   ``app.payment_events`` and ``app.billing_logs``, and rows);
3. ``appdb status``, ``appdb apply``, ``appdb verify``, then ``appdb apply`` again,
   which must apply nothing, and ``appdb inspect``;
4. the cluster is stopped and its folder removed.

Everything goes through ``bin/appdb``, the path the command resources take. The
Markdown goes to ``$GITHUB_STEP_SUMMARY`` when set and to ``--out``. Exit 0 only when
every state applied, verified and re-applied nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import report  # noqa: E402  (ci/report.py, beside this file)

ROOT = report.ROOT
PRODUCTION_STATE = ROOT / "tests" / "states" / "production.sql"
# What production holds beyond memberships: the older payment tables 029 and 030 adopt.
PRODUCTION_BILLING_STATE = ROOT / "tests" / "states" / "production_billing.sql"
STATES = ("empty", "production")


def prepare(cluster, state: str) -> None:
    """Schema, roles and grants as Pulumi makes them; the production state on top when asked."""
    from appdb.schema.fresh import program_baseline

    with cluster.connect() as conn:
        program_baseline(conn)
        if state == "production":
            conn.execute(PRODUCTION_STATE.read_text(encoding="utf-8"))
            conn.execute(PRODUCTION_BILLING_STATE.read_text(encoding="utf-8"))


def run_state(state: str) -> tuple[bool, str]:
    """One starting state, start to finish, on its own cluster; returns (ok, Markdown)."""
    from appdb.local.throwaway import throwaway_cluster

    title = {"empty": "from an empty schema", "production": "from the production state"}[state]
    parts = [f"### Throwaway database {title}\n"]
    try:
        with throwaway_cluster(f"appdb-throwaway-{state}-", tcp=True) as cluster:
            prepare(cluster, state)
            env = {**os.environ, "DATABASE_URL": cluster.dsn(tcp=True)}  # names its password file
            before = report.run_appdb("status", "--json", env=env)
            applied = report.run_appdb("apply", "--json", env=env)
            verify = report.run_appdb("verify", "--json", env=env)
            again = report.run_appdb("apply", "--json", env=env)
            inspect = report.run_appdb("inspect", "--json", env=env)
    except Exception as exc:  # a report must come out even when the harness itself breaks
        parts.append(f"The harness failed: `{report.cell(type(exc).__name__)}: {report.cell(exc)}`\n")
        return False, "\n".join(parts)
    try:
        outcomes = (applied.data or {}).get("outcomes", [])
        repeat = (again.data or {}).get("outcomes", None)
        ok = (applied.returncode == 0 and verify.returncode == 0 and bool((verify.data or {}).get("ok"))
              and again.returncode == 0 and repeat == [])
        parts.append(("**Applied and verified.**" if ok else "**FAILED.**") + "\n")
        parts += ["#### Before\n", report.status_markdown(before), "#### `appdb apply`\n"]
        if applied.returncode != 0 or applied.data is None:
            parts.append(report.failure_markdown(applied))
        elif outcomes:
            parts += [f"- {report.cell(o.get('id'))} {report.cell(o.get('name'))}: {o.get('action', 'applied')} "
                      f"in {o.get('seconds', 0)} s" for o in outcomes]
            parts.append("")
        else:
            parts.append("Nothing to apply.\n")
        parts += ["#### `appdb verify`\n", report.verify_markdown(verify), "#### `appdb apply`, again\n"]
        if again.returncode != 0 or repeat is None:
            parts.append(report.failure_markdown(again))
        elif repeat:
            parts.append(f"**Applied again**: {', '.join(o.get('id', '?') for o in repeat)}: re-running must apply nothing.\n")
        else:
            parts.append("Applied nothing, as it must.\n")
        parts += ["#### `appdb inspect`\n", report.inspect_markdown(inspect)]
        return ok, "\n".join(parts)
    except Exception as exc:  # a report must come out even when the harness itself breaks
        parts.append(f"The harness failed: `{report.cell(type(exc).__name__)}: {report.cell(exc)}`\n")
        return False, "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ci/throwaway.py", description=__doc__.splitlines()[0])
    parser.add_argument("--state", action="append", choices=STATES,
                        help="starting state; repeat for several (default: all)")
    parser.add_argument("--out", type=Path, help="also write the Markdown to this file")
    args = parser.parse_args(argv)

    results = []
    for state in args.state or STATES:
        results.append(run_state(state))
        print(f"throwaway {state}: {'ok' if results[-1][0] else 'FAILED'}", file=sys.stderr)
    ok = all(result for result, _ in results)
    heading = "## appdb: migrations on a throwaway database\n\n" + (
        "Every migration applied and verified from each starting state.\n" if ok
        else "**At least one starting state failed**: see below.\n")
    report.write_outputs(heading + "\n" + "\n".join(text for _, text in results), args.out)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
