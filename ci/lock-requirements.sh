#!/bin/sh
# Regenerates requirements.lock: every package requirements.txt needs at run time, transitive
# ones included, pinned with the sha256 of each of its files on PyPI. The workflows that hold
# secrets install from it with `pip install --require-hashes`, so a package changed on the index
# (or in between) fails the install instead of running with the deploy credentials.
#
#   ci/lock-requirements.sh        after any change to requirements.txt; commit both files
#
# pip-tools runs in a throwaway virtualenv (it is no dependency of the project), on Python 3.11
# like the workflows, against PyPI itself (a local --find-links would leave hashes out).
set -eu
cd "$(dirname "$0")/.."
PIP_TOOLS_VERSION=7.5.1
# Pulumi's uv toolchain (Pulumi.yaml); bin/setup installs it from requirements-uv.txt.
UV_VERSION=0.13.8
python=${PYTHON:-python3.11}
venv=$(mktemp -d)
trap 'rm -rf "$venv"' EXIT
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet "pip-tools==$PIP_TOOLS_VERSION"
env -u PIP_FIND_LINKS -u PIP_NO_INDEX CUSTOM_COMPILE_COMMAND="ci/lock-requirements.sh" \
    "$venv/bin/pip-compile" --quiet --generate-hashes --strip-extras --no-emit-find-links \
    --no-emit-index-url --output-file=requirements.lock requirements.txt
uv_in="$venv/requirements-uv.in"
echo "uv==$UV_VERSION" > "$uv_in"
env -u PIP_FIND_LINKS -u PIP_NO_INDEX "$venv/bin/pip-compile" --quiet --generate-hashes --strip-extras \
    --no-emit-find-links --no-emit-index-url --no-header --annotation-style=line --output-file="$venv/uv.txt" "$uv_in"
{ sed -n '1,3p' requirements-uv.txt; grep -v '^ *# via' "$venv/uv.txt"; } > "$venv/uv.new" && mv "$venv/uv.new" requirements-uv.txt
# uv.lock: what `uv run` (Pulumi's uv toolchain) syncs to; pyproject.toml's deploy group follows requirements.txt.
"$venv/bin/pip" install --quiet "uv==$UV_VERSION"
env -u PIP_FIND_LINKS -u PIP_NO_INDEX "$venv/bin/uv" lock
echo "wrote requirements.lock, requirements-uv.txt and uv.lock; check it installs: python3.11 -m venv /tmp/v && /tmp/v/bin/pip install --require-hashes -r requirements.lock"
