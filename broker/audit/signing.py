"""Ed25519 checkpoint keys, the message a checkpoint signs, and checking a signature.

A checkpoint vouches for a position in the chain: (file name, seq, hash of that record).
Whoever can rewrite the audit files can recompute every hash of the chain, but cannot sign
a checkpoint without the private key; keep the key away from the audit directory and hand
the public key to whoever verifies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

MESSAGE_DOMAIN = b"mcp-broker-audit-checkpoint-v1\n"
"""Prefix of every signed message, so a checkpoint signature means nothing anywhere else."""


class KeyFileError(ValueError):
    """A key file that cannot be read or is not an Ed25519 key."""


def key_id(public_key: Ed25519PublicKey) -> str:
    """`ed25519:<first 16 hex of sha256(raw public key)>`: names the key in every checkpoint."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def checkpoint_message(file: str, seq: int, record_hash: str, signer: str) -> bytes:
    """The bytes a checkpoint signs: the domain, then canonical JSON of what it vouches for."""
    body = orjson.dumps(
        {"file": file, "hash": record_hash, "key_id": signer, "seq": seq}, option=orjson.OPT_SORT_KEYS
    )
    return MESSAGE_DOMAIN + body


@dataclass(frozen=True, slots=True)
class CheckpointSigner:
    private_key: Ed25519PrivateKey
    key_id: str

    @classmethod
    def from_private_key(cls, private_key: Ed25519PrivateKey) -> CheckpointSigner:
        return cls(private_key, key_id(private_key.public_key()))

    @classmethod
    def from_pem_file(cls, path: Path) -> CheckpointSigner:
        return cls.from_private_key(load_private_key(path))

    def sign(self, file: str, seq: int, record_hash: str) -> str:
        """The base64 signature of (file, seq, hash)."""
        signature = self.private_key.sign(checkpoint_message(file, seq, record_hash, self.key_id))
        return base64.b64encode(signature).decode("ascii")


def signature_valid(
    public_key: Ed25519PublicKey, file: str, seq: int, record_hash: str, signer: str, signature: str
) -> bool:
    try:
        raw = base64.b64decode(signature, validate=True)
        public_key.verify(raw, checkpoint_message(file, seq, record_hash, signer))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise KeyFileError(f"cannot read the signing key {path}: {exc.strerror or exc}") from None
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}, not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM public key, or derived from a PEM private key."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read the public key {path}: {exc.strerror or exc}") from None
    if b"PRIVATE KEY" in data:
        return load_private_key(path).public_key()
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}, not an Ed25519 public key")
    return key


def generate_key_pair(private_path: Path, public_path: Path, *, overwrite: bool = False) -> str:
    """Write a new key pair (private key mode 0600); returns its key id."""
    for path in (private_path, public_path):
        if path.exists() and not overwrite:
            raise KeyFileError(f"{path} exists (use --force to replace it)")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, private_pem)
    finally:
        os.close(fd)
    public_path.write_bytes(public_pem)
    return key_id(key.public_key())
