"""Pulumi.yaml and the stack files: what the CLI validates before the program runs, checked here.

The CLI refuses a stack whose secret key is not encrypted, a non-project key with a
``type`` or ``default``, an ``array`` without ``items``, and a project key with
neither a value nor a default. These tests hold the files to those rules and to
the stacks' intent (prod protects its data), without the CLI.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import pytest
import yaml

from appdb.local.cluster import OLD_PASSWORDS

PROJECT = Path(__file__).resolve().parents[1]
STACKS = ("local", "dev", "prod")
LOCAL_PASSPHRASE = "appdb-local"  # documented in Pulumi.local.yaml and docs/pulumi.md
# The fixed passwords earlier versions published: the local clusters', the test clusters',
# the baseline's app_backend's and the local stack's app_backend's.
FIXED_PASSWORDS = (OLD_PASSWORDS[0], "Xd5h-Gq2v-Nm8r-Tk4z", "Wc9j-Ks3f-Dp7x-Bn2q", "Zf4n-Pk8s-Lb6w-Jy3t")


def project() -> dict:
    return yaml.safe_load((PROJECT / "Pulumi.yaml").read_text())


def stack_file(stack: str) -> dict:
    return yaml.safe_load((PROJECT / f"Pulumi.{stack}.yaml").read_text()) or {}


def keys_read_by_the_program() -> set[str]:
    source = (PROJECT / "__main__.py").read_text()
    return set(re.findall(r"config\.(?:get|require)\w*\(\s*\"([A-Za-z0-9]+)\"", source))


def test_the_runtime_is_python_in_the_project_virtualenv():
    runtime = project()["runtime"]
    assert runtime["name"] == "python"
    assert runtime["options"]["virtualenv"] == ".venv"
    assert ".venv/" in (PROJECT / ".gitignore").read_text().split()


def test_every_key_the_program_reads_is_declared_with_a_type_and_description():
    declared = {key: spec for key, spec in project()["config"].items() if ":" not in key}
    read = keys_read_by_the_program()
    assert read, "found no config reads in __main__.py"
    assert read == set(declared), f"read but not declared: {read - set(declared)}; declared but unused: {set(declared) - read}"
    for key, spec in declared.items():
        assert spec.get("type") in ("string", "integer", "boolean", "array"), key
        assert spec.get("description"), key
        if spec["type"] == "array":
            assert "items" in spec, f"{key}: the CLI refuses an array without items"


def test_safe_defaults_protect_data_on_a_stack_that_forgot_to_say():
    declared = project()["config"]
    assert declared["protectSchema"]["default"] is True
    assert declared["allowDataLoss"]["default"] is False
    assert declared["connectTimeout"]["default"] <= 15
    assert declared["dbPort"]["default"] != 6543


def test_keys_outside_the_project_namespace_carry_only_a_value():
    for key, spec in project()["config"].items():
        if ":" in key:
            assert set(spec) == {"value"}, f"{key}: the CLI refuses type/default on a non-project key"
    assert project()["config"]["pulumi:disable-default-providers"]["value"] == ["postgresql"]


@pytest.mark.parametrize("stack", STACKS)
def test_stack_files_set_only_declared_keys_and_encrypt_secrets(stack):
    declared = project()["config"]
    for key, value in (stack_file(stack).get("config") or {}).items():
        namespace, _, short = key.partition(":")
        assert namespace == "appdb", f"{stack}: {key} is outside the project namespace"
        assert short in declared, f"{stack}: {key} is not declared in Pulumi.yaml"
        if declared[short].get("secret"):
            assert isinstance(value, dict) and set(value) == {"secure"}, f"{stack}: {key} must be encrypted"
        else:
            assert not isinstance(value, dict) or "secure" not in value



@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_deploy_password_never_sits_in_a_dev_or_prod_stack_file(stack):
    """The preview jobs hold the passphrase that decrypts these files and run any branch's code:
    a dbPassword here, even encrypted, would hand the deploy login to every preview."""
    assert "appdb:dbPassword" not in (stack_file(stack).get("config") or {})


def test_no_instruction_tells_anyone_to_put_the_deploy_password_in_a_stack_file():
    """One story: PGPASSWORD from the deploy environment. Only the local stack keeps dbPassword."""
    places = [PROJECT / "README.md", PROJECT / "Pulumi.dev.yaml", PROJECT / "Pulumi.prod.yaml",
              *sorted((PROJECT / "docs").glob("*.md")), *sorted((PROJECT / "ci").glob("*"))]
    for path in places:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"config set[^\n`]*--secret[^\n`]*dbPassword", text), path.name
        assert "set_secret dbPassword" not in text, path.name

def test_prod_protects_the_schema_and_refuses_data_loss_while_dev_and_local_allow_it():
    def value(stack: str, key: str) -> str | None:
        return (stack_file(stack).get("config") or {}).get(f"appdb:{key}")

    assert value("prod", "protectSchema") == "true"
    assert value("prod", "allowDataLoss") == "false"
    for stack in ("dev", "local"):
        assert value(stack, "allowDataLoss") == "true"
        assert value(stack, "protectSchema") == "false"


def test_the_program_never_asks_which_stack_it_is():
    sources = [PROJECT / "__main__.py", *sorted((PROJECT / "components").glob("*.py"))]
    for path in sources:
        text = path.read_text()
        # pulumi.get_stack() (not the SDK's _get_stack_trace, which components/sdk_at_scale.py replaces)
        assert not re.search(r"\bget_stack\b", text), path.name
        assert not re.search(r"""["'](prod|dev|local)["']""", text), f"{path.name} names a stack"


def test_components_never_read_config():
    for path in sorted((PROJECT / "components").glob("*.py")):
        assert "Config(" not in path.read_text(), f"{path.name} reads config; __main__.py should"


def test_local_stack_targets_the_local_database():
    config = stack_file("local")["config"]
    assert config["appdb:dbHost"] == "127.0.0.1"
    assert config["appdb:dbPort"] == "54322"
    assert config["appdb:sslMode"] == "disable"


def _decrypt(key: bytes, value: str) -> str:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    version, nonce, ciphertext = value.split(":")
    assert version == "v1"
    return AESGCM(key).decrypt(base64.b64decode(nonce), base64.b64decode(ciphertext), None).decode()


def test_the_documented_local_passphrase_opens_the_local_stack_and_it_holds_no_password():
    """Pulumi's passphrase format: encryptionsalt v1:<salt>:<ciphertext of "pulumi">, PBKDF2-SHA256 x 1e6, AES-256-GCM.

    Each local cluster has its own random passwords; bin/deploy-local exports them, so
    the stack file has none to hold (and none that everyone's clusters would share).
    """
    settings = stack_file("local")
    version, salt, check = settings["encryptionsalt"].split(":", 2)
    assert version == "v1"
    key = hashlib.pbkdf2_hmac("sha256", LOCAL_PASSPHRASE.encode(), base64.b64decode(salt), 1_000_000, 32)
    assert _decrypt(key, check) == "pulumi"
    config = settings["config"]
    assert "appdb:dbPassword" not in config and "appdb:backendPassword" not in config


def test_every_optional_key_has_a_default_so_the_cli_accepts_a_stack_that_leaves_it_out():
    """The Pulumi CLI refuses a stack without a value for a declared key that has no default
    ("Stack 'local' is missing configuration value 'sslRootCert'", seen on v3.276), and a plain
    default on a key declared secret; so optional keys have a default and are not declared secret."""
    declared = yaml.safe_load((PROJECT / "Pulumi.yaml").read_text())["config"]
    for key in ("dbPassword", "backendPassword", "sslRootCert"):
        assert declared[key].get("default") == "" and not declared[key].get("secret"), key
    # The local stack runs as committed; dev and prod are told to set dbHost and backendPassword.
    settings = stack_file("local").get("config") or {}
    for key, spec in declared.items():
        if isinstance(spec, dict) and "default" not in spec and "value" not in spec and key != "backendPassword":
            assert f"appdb:{key}" in settings, f"Pulumi.local.yaml lacks {key}, which has no default"


def test_no_fixed_password_is_published_in_the_docs_stack_files_or_scripts():
    paths = [PROJECT / "README.md", *sorted((PROJECT / "docs").glob("*.md")), *sorted(PROJECT.glob("Pulumi*.yaml")),
             *sorted((PROJECT / "bin").iterdir())]
    for path in paths:
        text = path.read_text()
        for password in FIXED_PASSWORDS:
            assert password not in text, f"{path.name} holds the fixed password {password[:4]}..."


def test_the_local_passphrase_is_documented_where_people_look():
    for path in (PROJECT / "Pulumi.local.yaml", PROJECT / "docs" / "pulumi.md", PROJECT / "bin" / "deploy-local"):
        assert LOCAL_PASSPHRASE in path.read_text(), path.name
