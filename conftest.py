"""pytest's entry at the project root: the fixture plugins of tests/fixtures/.

Fixtures live in plugin modules, helpers in tests/helpers.py; no test imports either
from a conftest or from another test file.
"""

pytest_plugins = ["tests.fixtures.database"]
