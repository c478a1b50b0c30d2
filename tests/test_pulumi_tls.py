"""TLS in the Pulumi program, under the mocks: sslRootCert reaches the provider and the commands.

With sslMode verify-full or verify-ca, both the provider (its ``sslrootcert`` input) and
every command (``PGSSLROOTCERT``) check the server against the root certificate; without
one, or with a path that is no certificate, the program stops and names the input;
``allow`` and ``prefer`` are told why they are weaker than ``require``. A real server
with a wrong certificate: tests/test_tls.py.
"""

from __future__ import annotations

import logging

import pytest

from tests.pulumi_mocks import PROVIDER, env, make_checkout, run_program, stack_config

pytestmark = pytest.mark.filterwarnings("ignore:postgresql.DefaultPrivileg has been deprecated:DeprecationWarning")
PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
CERT = "certs/supabase-root.crt"


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    root = make_checkout(tmp_path_factory.mktemp("tls") / "appdb")
    (root / "certs").mkdir()
    (root / CERT).write_text(PEM)
    (root / "certs" / "not-a-cert.txt").write_text("hello\n")
    return root


@pytest.mark.parametrize("mode", ["verify-full", "verify-ca"])
def test_a_verifying_sslmode_gives_the_root_certificate_to_the_provider_and_every_command(checkout, mode):
    run = run_program(checkout, "prod", stack_config("prod", sslMode=mode, sslRootCert=CERT))
    provider = run.one(PROVIDER, "db").inputs
    assert (provider["sslmode"], provider["sslrootcert"]) == (mode, CERT)
    assert run.commands, "no command to check"
    for name, command in run.commands.items():
        variables = env(command)
        assert (variables["PGSSLMODE"], variables["PGSSLROOTCERT"]) == (mode, CERT), name


@pytest.mark.parametrize("mode", ["verify-full", "verify-ca"])
def test_a_verifying_sslmode_without_a_root_certificate_stops_the_program_naming_the_key(checkout, mode):
    with pytest.raises(Exception, match=r"sslrootcert: sslmode %s .*set sslRootCert" % mode):
        run_program(checkout, "prod", stack_config("prod", sslMode=mode))


@pytest.mark.parametrize("path, problem", [("certs/missing.crt", "is not a file"),
                                           ("certs/not-a-cert.txt", "holds no PEM certificate")])
def test_a_root_certificate_that_is_missing_or_no_certificate_stops_the_program(checkout, path, problem):
    with pytest.raises(Exception, match=f"sslrootcert: {path} {problem}"):
        run_program(checkout, "prod", stack_config("prod", sslMode="verify-full", sslRootCert=path))


def test_without_a_root_certificate_the_commands_get_no_pgsslrootcert(checkout):
    run = run_program(checkout, "dev", stack_config("dev"))
    assert "sslrootcert" not in run.one(PROVIDER, "db").inputs
    assert all("PGSSLROOTCERT" not in env(command) for command in run.commands.values())


@pytest.mark.parametrize("mode", ["allow", "prefer"])
def test_allow_and_prefer_are_told_why_they_are_weaker_than_require(checkout, mode, caplog):
    with caplog.at_level(logging.WARNING):
        run_program(checkout, "dev", stack_config("dev", sslMode=mode))
    warnings = [r.getMessage() for r in caplog.records if f"sslmode {mode}" in r.getMessage()]
    assert warnings and "weaker than require" in warnings[0] and "plain text" in warnings[0]


def test_require_and_verify_full_get_no_warning(checkout, caplog):
    with caplog.at_level(logging.WARNING):
        run_program(checkout, "dev", stack_config("dev", sslMode="require"))
        run_program(checkout, "prod", stack_config("prod", sslMode="verify-full", sslRootCert=CERT))
    assert not [r for r in caplog.records if "weaker than require" in r.getMessage()]
