#!/bin/sh
# Installs the PostgreSQL server programs on a GitHub-hosted Ubuntu runner and puts them
# first on PATH for the later steps, where `appdb local` and the test fixtures find
# initdb and pg_ctl. Supabase runs PostgreSQL 15 (newer projects 17): PG_MAJOR picks it.
#
# The runner image ships a PostgreSQL of its own (16 on ubuntu-24.04) whose pg_config
# would win otherwise, hence the explicit PATH entry.
set -eu
major="${PG_MAJOR:-15}"
bindir="/usr/lib/postgresql/$major/bin"

if [ ! -x "$bindir/initdb" ]; then
    sudo apt-get update -qq
    sudo apt-get install -y -qq postgresql-common
    # PostgreSQL's own apt repository carries every supported major for every Ubuntu release.
    sudo /usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y
    sudo apt-get install -y -qq "postgresql-$major" "postgresql-client-$major"
fi
# Debian's packaging starts a cluster of its own: the jobs never use it.
sudo pg_dropcluster --stop "$major" main 2>/dev/null || true

"$bindir/initdb" --version
if [ -n "${GITHUB_PATH:-}" ]; then
    echo "$bindir" >> "$GITHUB_PATH"
fi
