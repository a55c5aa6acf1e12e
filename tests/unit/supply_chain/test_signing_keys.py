"""Key files: generated with the right modes, never overwritten; hostile key files refused."""

import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from factory.supply_chain.signing_keys import (
    KeyFileError,
    generate_key_pair,
    load_public_key,
    load_signing_key,
    signing_key_from_env,
    signing_summary,
)


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa-p256"])
def test_generate_writes_a_0600_key_and_its_public_key(tmp_path, kind):
    private, public, key_id = generate_key_pair(tmp_path / "signing.pem", kind)
    assert public == tmp_path / "signing.pem.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" not in public.read_bytes()
    key = load_signing_key(private)
    assert (key.kind, key.key_id) == (kind, key_id)
    assert load_public_key(public).key_id == key_id
    with pytest.raises(KeyFileError, match="does not overwrite"):
        generate_key_pair(private, kind)


def test_generate_refuses_an_existing_pub_file(tmp_path):
    (tmp_path / "k.pub").write_text("mine")
    with pytest.raises(KeyFileError, match=r"k\.pub exists"):
        generate_key_pair(tmp_path / "k")
    assert not (tmp_path / "k").exists()


def _pem(key, *, password: bytes | None = None) -> bytes:
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "not a PEM private key"),
        (b"-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n", "not a PEM"),
        (
            _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
            "RSAPrivateKey.*ed25519 or ecdsa-p256",
        ),
        (_pem(ec.generate_private_key(ec.SECP384R1())), "ed25519 or ecdsa-p256"),
        (_pem(ec.generate_private_key(ec.SECP256R1()), password=b"pw"), "encrypted"),
        (b"x" * (64 * 1024 + 1), "not a PEM key"),
    ],
)
def test_unusable_signing_key_files_are_named(tmp_path, content, problem):
    path = tmp_path / "key.pem"
    path.write_bytes(content)
    with pytest.raises(KeyFileError, match=problem) as caught:
        load_signing_key(path)
    assert str(path) in str(caught.value)


def test_missing_directory_and_fifo_keys_are_refused(tmp_path):
    with pytest.raises(KeyFileError, match="No such file"):
        load_signing_key(tmp_path / "absent")
    with pytest.raises(KeyFileError, match="not a regular file"):
        load_public_key(tmp_path)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(KeyFileError, match="not a regular file"):
        load_signing_key(tmp_path / "fifo")


def test_a_private_key_is_not_a_public_key(tmp_path):
    private, _, _ = generate_key_pair(tmp_path / "k")
    with pytest.raises(KeyFileError, match="not a PEM public key"):
        load_public_key(private)


def test_signing_key_from_env(tmp_path, monkeypatch):
    monkeypatch.delenv("FACTORY_SIGNING_KEY", raising=False)
    assert signing_key_from_env() is None
    monkeypatch.setenv("FACTORY_SIGNING_KEY", str(tmp_path / "nope"))
    with pytest.raises(KeyFileError, match=r"^FACTORY_SIGNING_KEY: signing key"):
        signing_key_from_env()
    private, _, key_id = generate_key_pair(tmp_path / "k")
    monkeypatch.setenv("FACTORY_SIGNING_KEY", str(private))
    assert signing_key_from_env().key_id == key_id


def test_signing_summary_says_how_builds_are_signed(tmp_path, monkeypatch):
    monkeypatch.delenv("FACTORY_SIGNING_KEY", raising=False)
    assert signing_summary().startswith("attestations: unsigned (FACTORY_SIGNING_KEY is not set")
    private, _, key_id = generate_key_pair(tmp_path / "k", "ecdsa-p256")
    monkeypatch.setenv("FACTORY_SIGNING_KEY", str(private))
    assert (
        signing_summary() == f"attestations: signed with ecdsa-p256 key {key_id[:16]} ({private})"
    )
    (tmp_path / "bad").write_text("nope")
    monkeypatch.setenv("FACTORY_SIGNING_KEY", str(tmp_path / "bad"))
    with pytest.raises(KeyFileError, match="not a PEM private key"):
        signing_summary()
