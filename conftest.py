"""pytest's entry at the project root: the fixture plugins of tests/fixtures/.

Fixtures live in plugin modules, helpers in tests/helpers.py; no test imports either
from a conftest or from another test file.
"""

pytest_plugins = ["tests.fixtures.database"]


def pytest_configure(config) -> None:  # noqa: ANN001 - pytest's Config
    """A shell that sets APPDB_FORK_SERVER=1 (README, "A warm appdb") would send every command the
    tests start through a fork server: which path a test takes is the test's to say."""
    import os

    os.environ.pop("APPDB_FORK_SERVER", None)
