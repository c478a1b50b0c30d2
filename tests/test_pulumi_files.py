"""The Pulumi program refuses what the engine refuses in sql/, with the engine's one line.

``__main__.py`` calls ``appdb.migration.discover``, so a file the engine would refuse
(not UTF-8, transaction control) fails the program before any resource is registered.
Run under the mocks harness of test_pulumi_program.py.
"""

from __future__ import annotations

import pytest

from tests.pulumi_mocks import MIGRATIONS, make_checkout, run_program, stack_config

pytestmark = pytest.mark.filterwarnings("ignore:postgresql.DefaultPrivileg has been deprecated:DeprecationWarning")


def test_a_migration_that_is_not_utf8_fails_the_program_naming_the_file(tmp_path):
    checkout = make_checkout(tmp_path / "appdb")
    (checkout / "sql" / "028_fix_memberships_unique_constraint.sql").write_bytes(b"-- caf\xe9\nSELECT 1;\n")
    with pytest.raises(Exception, match=r"sql/028_fix_memberships_unique_constraint.sql:1: not UTF-8 "
                                        r"\(byte 0xe9 at offset 6\): save the file as UTF-8") as failed:
        run_program(checkout, "dev", stack_config("dev"))
    # pulumi.RunError: the CLI prints its message alone, without a Python traceback.
    assert type(failed.value).__name__ == "RunError"


def test_a_revert_with_transaction_control_fails_the_program_naming_the_file(tmp_path):
    checkout = make_checkout(tmp_path / "appdb", MIGRATIONS)
    (checkout / "sql" / "revert" / "027_memberships.sql").write_text("DROP TABLE app.memberships;\nCOMMIT;\n")
    with pytest.raises(Exception, match=r"sql/revert/027_memberships.sql:2: COMMIT is transaction control"):
        run_program(checkout, "dev", stack_config("dev"))
