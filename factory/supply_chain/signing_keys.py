"""Signing keys for attestations: ed25519 or ECDSA P-256, PEM files, from `cryptography`.

`generate_key_pair` writes a private key (PKCS#8 PEM, mode 0600, never over an existing file) and
its public key beside it as `FILE.pub` (SubjectPublicKeyInfo PEM). `signing_key_from_env` loads
the key FACTORY_SIGNING_KEY names, or None when it is unset (builds then push no attestations).
A key file is input like any other: it must be a small regular file holding one PEM key of an
allowed kind; anything else is a KeyFileError naming the file and what is wrong.

A key's id is the sha256 (hex) of its public key's DER encoding: the same for the private key
and its `.pub`, and what a DSSE signature's `keyid` says.

No Dagster import.
"""

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from factory.errors import FactoryError

SIGNING_KEY_ENV = "FACTORY_SIGNING_KEY"
KINDS = ("ed25519", "ecdsa-p256")
MAX_KEY_FILE_BYTES = 64 * 1024


class KeyFileError(FactoryError, ValueError):
    """A key file that cannot be used: missing, unreadable, not a PEM key, or the wrong kind."""


def _key_id(public) -> str:
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def _kind_of(key) -> str | None:
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return "ed25519"
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)) and isinstance(
        key.curve, ec.SECP256R1
    ):
        return "ecdsa-p256"
    return None


@dataclass(frozen=True)
class PublicKey:
    """A public key that verifies signatures."""

    key: object
    kind: str
    key_id: str

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            if self.kind == "ed25519":
                self.key.verify(signature, message)  # type: ignore[attr-defined]
            else:
                self.key.verify(signature, message, ec.ECDSA(hashes.SHA256()))  # type: ignore[attr-defined]
        except (InvalidSignature, ValueError):
            return False
        return True

    def pem(self) -> bytes:
        return self.key.public_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


@dataclass(frozen=True)
class SigningKey:
    """A private key that signs; `public` verifies what it signed."""

    key: object
    kind: str
    key_id: str
    path: str

    @property
    def public(self) -> PublicKey:
        public = self.key.public_key()  # type: ignore[attr-defined]
        return PublicKey(public, self.kind, self.key_id)

    def sign(self, message: bytes) -> bytes:
        if self.kind == "ed25519":
            return self.key.sign(message)  # type: ignore[attr-defined]
        return self.key.sign(message, ec.ECDSA(hashes.SHA256()))  # type: ignore[attr-defined]


def _read_key_file(path: Path, what: str) -> bytes:
    try:
        info = path.stat()
    except OSError as exc:
        msg = f"{what} {path}: {exc.strerror or exc}"
        raise KeyFileError(msg) from None
    if not stat.S_ISREG(info.st_mode):
        msg = f"{what} {path} is not a regular file"
        raise KeyFileError(msg)
    if info.st_size > MAX_KEY_FILE_BYTES:
        msg = (
            f"{what} {path} has {info.st_size} bytes: not a PEM key (at most {MAX_KEY_FILE_BYTES})"
        )
        raise KeyFileError(msg)
    try:
        return path.read_bytes()[:MAX_KEY_FILE_BYTES]
    except OSError as exc:
        msg = f"{what} {path}: {exc.strerror or exc}"
        raise KeyFileError(msg) from None


def load_signing_key(path: str | Path) -> SigningKey:
    """The private key in a PEM file (unencrypted PKCS#8 or the key's traditional format)."""
    path = Path(path)
    data = _read_key_file(path, "signing key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        msg = f"signing key {path} is encrypted: Factory needs an unencrypted key file (mode 0600)"
        raise KeyFileError(msg) from None
    except (ValueError, UnsupportedAlgorithm):
        msg = (
            f"signing key {path} is not a PEM private key: make one with "
            "`factory keys generate --output FILE`"
        )
        raise KeyFileError(msg) from None
    kind = _kind_of(key)
    if kind is None:
        msg = (
            f"signing key {path} is a {type(key).__name__}: Factory signs with {' or '.join(KINDS)}"
        )
        raise KeyFileError(msg)
    return SigningKey(key, kind, _key_id(key.public_key()), str(path))  # type: ignore[union-attr]


def load_public_key(path: str | Path) -> PublicKey:
    """The public key in a PEM file (SubjectPublicKeyInfo, as `factory keys generate` writes)."""
    path = Path(path)
    data = _read_key_file(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        msg = f"public key {path} is not a PEM public key (as `factory keys generate` writes)"
        raise KeyFileError(msg) from None
    kind = _kind_of(key)
    if kind is None:
        msg = f"public key {path} is a {type(key).__name__}: Factory verifies {' or '.join(KINDS)}"
        raise KeyFileError(msg)
    return PublicKey(key, kind, _key_id(key))


def signing_key_from_env() -> SigningKey | None:
    """The key FACTORY_SIGNING_KEY names; None when it is unset or empty."""
    value = os.environ.get(SIGNING_KEY_ENV, "").strip()
    if not value:
        return None
    try:
        return load_signing_key(Path(value).expanduser())
    except KeyFileError as exc:
        msg = f"{SIGNING_KEY_ENV}: {exc}"
        raise KeyFileError(msg) from None


def generate_key_pair(output: str | Path, kind: str = "ed25519") -> tuple[Path, Path, str]:
    """Write a new private key to `output` (0600) and its public key to `output.pub`.

    Refuses to overwrite either file. Returns (private path, public path, key id).
    """
    if kind not in KINDS:
        msg = f"key kind {kind!r} is not one of {', '.join(KINDS)}"
        raise KeyFileError(msg)
    private_path = Path(output)
    public_path = private_path.with_name(private_path.name + ".pub")
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            msg = f"{path} exists: Factory does not overwrite keys; choose another --output"
            raise KeyFileError(msg)
    key = (
        ed25519.Ed25519PrivateKey.generate()
        if kind == "ed25519"
        else ec.generate_private_key(ec.SECP256R1())
    )
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        # O_EXCL: created here with 0600 from the start, never readable by others for a moment.
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(private_pem)
        fd = os.open(public_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(public_pem)
    except OSError as exc:
        msg = f"cannot write the key pair to {private_path}: {exc.strerror or exc}"
        raise KeyFileError(msg) from None
    os.chmod(private_path, 0o600)  # whatever the umask said
    return private_path, public_path, _key_id(key.public_key())


def signing_summary() -> str:
    """One line saying how this process's builds sign their attestations (KeyFileError if the
    key FACTORY_SIGNING_KEY names cannot be used)."""
    key = signing_key_from_env()
    if key is None:
        return (
            f"attestations: unsigned ({SIGNING_KEY_ENV} is not set; make a key with "
            "`factory keys generate --output FILE`)"
        )
    return f"attestations: signed with {key.kind} key {key.key_id[:16]} ({key.path})"
