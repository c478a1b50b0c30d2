#!/bin/sh
# Sets a stack's database connection from the job's environment, on the runner's copy
# of Pulumi.<stack>.yaml only (nothing is committed back).
#
#   ci/stack-config.sh STACK preview   the READ-ONLY login: PR previews and the drift check
#   ci/stack-config.sh STACK deploy    the deploy login: `pulumi up`
#
# Reads libpq's variables, which the workflow fills from the job's GitHub environment:
# PGHOST, PGPORT, PGDATABASE, PGUSER (variables); PGSSLROOTCERT and PGSSLMODE (verify-full)
# when the workflow wrote Supabase's root certificate; PGPASSWORD (secret) is left in the
# environment for the provider and the commands, never written to config; in deploy mode
# also APPDB_BACKEND_PASSWORD (secret) when the stack file does not carry backendPassword.
# An unset variable leaves the stack file's value alone. Secrets go through stdin, never
# the command line, and `pulumi config set --secret` stores them encrypted.
set -eu

if [ $# -ne 2 ] || { [ "$2" != preview ] && [ "$2" != deploy ]; }; then
    echo "usage: ci/stack-config.sh STACK preview|deploy" >&2
    exit 2
fi
stack=$1
mode=$2

set_plain() {  # KEY VALUE: skipped when VALUE is empty
    if [ -n "$2" ]; then
        pulumi config set --stack "$stack" "appdb:$1" "$2"
        echo "stack-config: $stack appdb:$1 = $2"
    fi
}

set_secret() {  # KEY VALUE: skipped when VALUE is empty
    if [ -n "$2" ]; then
        printf '%s' "$2" | pulumi config set --stack "$stack" --secret "appdb:$1"
        echo "stack-config: $stack appdb:$1 = [secret]"
    fi
}

if [ "$mode" = preview ] && { [ -z "${PGUSER:-}" ] || [ -z "${PGPASSWORD:-}" ]; }; then
    echo "stack-config: error: PGUSER and PGPASSWORD (the read-only login) must be set for a preview" >&2
    exit 2
fi

set_plain dbHost "${PGHOST:-}"
set_plain dbPort "${PGPORT:-}"
set_plain dbName "${PGDATABASE:-}"
set_plain dbUser "${PGUSER:-}"
# Only with a root certificate: without one the workflow's PGSSLMODE is `require`, which must
# not weaken a stack file that verifies with a certificate of its own.
if [ -n "${PGSSLROOTCERT:-}" ]; then
    set_plain sslRootCert "$PGSSLROOTCERT"
    set_plain sslMode "${PGSSLMODE:-verify-full}"
fi
# PGPASSWORD stays in the environment: with dbPassword unset, the provider and the
# commands read it from there, so the deploy (or read-only) password never enters the
# stack file or the state.
if [ "$mode" = deploy ]; then
    set_secret backendPassword "${APPDB_BACKEND_PASSWORD:-}"
fi
