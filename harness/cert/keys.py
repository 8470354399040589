"""The certification center's Ed25519 key pair.

``keys/center.key`` (PKCS#8 PEM, file mode 0600, never printed) signs;
``keys/center.pub`` (SubjectPublicKeyInfo PEM) and its fingerprint, the sha256
of the 32 raw public-key bytes, are what people verify against. The fingerprint
is also the DSSE ``keyid``.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from harness.cert.files import sha256_bytes
from harness.results.record_files import now_iso

DEFAULT_KEY_DIR = Path("keys")
PRIVATE_FILE = "center.key"
PUBLIC_FILE = "center.pub"
INFO_FILE = "center.json"


class KeyFileError(Exception):
    """A key file that is missing, unreadable, of the wrong type or too open."""


@dataclass(frozen=True)
class KeyPair:
    directory: Path

    @property
    def private(self) -> Path:
        return self.directory / PRIVATE_FILE

    @property
    def public(self) -> Path:
        return self.directory / PUBLIC_FILE

    @property
    def info(self) -> Path:
        return self.directory / INFO_FILE


def fingerprint(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return sha256_bytes(raw)


def display_fingerprint(keyid: str) -> str:
    """``SHA256:1a2b 3c4d ...`` - groups of four hex digits, for people to compare."""
    return "SHA256:" + " ".join(keyid[i:i + 4] for i in range(0, len(keyid), 4))


def public_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(serialization.Encoding.PEM,
                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _write_private(path: Path, data: bytes) -> None:
    """Write with mode 0600 from the first byte (temp file + rename, never world-readable)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_key_pair(private: Path, public: Path, info: Path, facts: dict[str, Any],
                   whose: str, force: bool = False) -> str:
    """Generate an Ed25519 key pair, write the private key (mode 0600), the public key and
    an info file of ``facts`` (plus keyid and creation time); return the keyid. Refuses to
    overwrite an existing key unless ``force`` (``whose``: "a center key", ...)."""
    existing = [p for p in (private, public) if p.exists()]
    if existing and not force:
        raise KeyFileError(f"{existing[0]} already exists; refusing to overwrite {whose} "
                           "(use --force to replace it; what was signed with the old key "
                           "then no longer verifies against the new one)")
    folder = private.parent
    if not folder.is_dir() and (folder.exists() or any(p.exists() and not p.is_dir()
                                                       for p in folder.parents)):
        raise KeyFileError(f"key folder {folder} is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KeyFileError(f"cannot create key folder {folder}: {exc.strerror}") from None
    key = Ed25519PrivateKey.generate()
    _write_private(private, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    public.write_text(public_pem(key.public_key()), encoding="ascii")
    keyid = fingerprint(key.public_key())
    info.write_text(json.dumps({**facts, "keyid": keyid, "created": now_iso()},
                               ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return keyid


def init_keys(directory: Path, name: str, force: bool = False) -> tuple[KeyPair, str]:
    """Create a new key pair in ``directory``; returns it and its keyid."""
    pair = KeyPair(directory)
    keyid = write_key_pair(pair.private, pair.public, pair.info, {"name": name},
                           "a center key", force)
    return pair, keyid


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{what} {path} does not exist (create one with "
                           "'shipei keys init')") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def load_private_key(path: Path) -> Ed25519PrivateKey:
    data = _read(path, "private key")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyFileError(f"private key {path} is accessible by others (mode {mode:04o}); "
                           f"run: chmod 600 {path}")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} is not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    data = _read(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise KeyFileError(f"{path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path} is not an Ed25519 public key")
    return key


def center_name(directory: Path) -> str:
    """The center's name recorded by ``shipei keys init --name`` (empty if none)."""
    try:
        return str(json.loads((directory / INFO_FILE).read_text(encoding="utf-8"))["name"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""
