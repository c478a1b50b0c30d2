"""TLS that checks who answers, on a real PostgreSQL with a certificate from a CA made here.

A cluster of its own (the session cluster has no TLS) serves a certificate for
127.0.0.1 and localhost, signed by a throwaway CA. With sslmode verify-full the engine
connects when PGSSLROOTCERT is that CA, and with another CA (a server that is not the
one it claims to be) it stops with one line and exit 2 before anything changes: this
is the first thing a deploy's commands do, as the provider's connection is for the
resources.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appdb.local.cluster import Cluster, server_account
from tests.helpers import ROOT, SQL_DIR, free_port


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_server_cert(ca_key, ca_cert) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


class TLSCluster:
    """A started cluster with ssl=on, and the CA that signed its certificate, and one that did not."""

    def __init__(self, home: Path) -> None:
        ca_key, ca_cert = make_ca("appdb test CA")
        _, self.other_ca = make_ca("appdb test CA")  # the same name, another key: an impostor's CA
        server_key, server_cert = make_server_cert(ca_key, ca_cert)
        tls = home.parent / "tls"
        tls.mkdir(parents=True)
        (tls / "server.crt").write_bytes(_pem(server_cert))
        key_path = tls / "server.key"
        key_path.write_bytes(server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
        key_path.chmod(0o600)
        account = server_account()
        if account is not None:  # the server runs as the postgres OS user and must read its key
            for path in (tls, tls / "server.crt", key_path):
                os.chown(path, account.pw_uid, account.pw_gid)
        self.root = home.parent / "root.crt"
        self.root.write_bytes(_pem(ca_cert))
        self.wrong_root = home.parent / "other-root.crt"
        self.wrong_root.write_bytes(_pem(self.other_ca))
        self.cluster = Cluster(home=home, port=free_port(), settings={
            "fsync": "off", "ssl": "on", "ssl_cert_file": f"'{tls / 'server.crt'}'",
            "ssl_key_file": f"'{key_path}'",
        })
        self.cluster.init()
        self.cluster.start()
        self.cluster.shape("postgres")  # the Supabase shape and the `postgres` login the engine deploys with

    def env(self, root: Path, host: str = "127.0.0.1") -> dict[str, str]:
        """libpq variables as the Pulumi program hands them to the commands, with verify-full."""
        params = self.cluster.params(tcp=True)
        base = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "DATABASE_URL"}
        return {**base, "PYTHONPATH": str(ROOT), "APPDB_SQL_DIR": str(SQL_DIR), "DATABASE_URL": "",
                "PGHOST": host, "PGPORT": params["port"], "PGUSER": params["user"], "PGDATABASE": params["dbname"],
                "PGPASSWORD": self.cluster.password(), "PGSSLMODE": "verify-full", "PGSSLROOTCERT": str(root),
                "PGCONNECT_TIMEOUT": "10"}


@pytest.fixture(scope="module")
def tls() -> Iterator[TLSCluster]:
    folder = Path(tempfile.mkdtemp(prefix="appdb-tls-"))
    os.chmod(folder, 0o755)  # the server user reads the certificate below it
    node = None
    try:
        node = TLSCluster(folder / "cluster")
        yield node
    finally:
        if node is not None:
            node.cluster.down()
        shutil.rmtree(folder, ignore_errors=True)


def appdb(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appdb", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=60, check=False)


def schemas(tls: TLSCluster) -> list[str]:
    with tls.cluster.connect() as conn:
        return [r[0] for r in conn.execute("SELECT nspname FROM pg_namespace ORDER BY 1").fetchall()]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_verify_full_with_the_ca_that_signed_the_server_connects_over_tls(tls, host):
    result = appdb("status", env=tls.env(tls.root, host))
    assert result.returncode == 0, result.stderr
    check = subprocess.run([sys.executable, "-c", "import psycopg; c = psycopg.connect(''); "
                            "print(c.execute('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()').fetchone()[0])"],
                           capture_output=True, text=True, env=tls.env(tls.root, host), check=False)
    assert check.stdout.strip() == "True", check.stderr


def test_a_certificate_the_root_did_not_sign_fails_in_one_line_before_anything_changes(tls):
    before = schemas(tls)
    result = appdb("apply", env=tls.env(tls.wrong_root))
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "certificate" in lines[0] and "PGSSLROOTCERT" in lines[0], lines[0]
    assert tls.cluster.password() not in result.stdout + result.stderr
    assert schemas(tls) == before and "appdb" not in before


def test_a_missing_root_certificate_file_fails_in_one_line(tls, tmp_path):
    result = appdb("status", env=tls.env(tmp_path / "missing.crt"))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "missing.crt" in result.stderr
