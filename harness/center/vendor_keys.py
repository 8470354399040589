"""A vendor's Ed25519 signing key pair (``vendor.key``, ``vendor.pub``, ``vendor.json``).

The same key type and fingerprint as the center's (:mod:`harness.cert.keys`); only
the file names and the role differ, so a vendor key is never mistaken for a
center key.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.cert.keys import KeyFileError, write_key_pair

PRIVATE_FILE = "vendor.key"
PUBLIC_FILE = "vendor.pub"
INFO_FILE = "vendor.json"


def init_vendor_keys(directory: Path, vendor: str, force: bool = False) -> tuple[Path, str]:
    """Write a new vendor key pair into ``directory``; return the public key path and keyid."""
    if not vendor.strip():
        raise KeyFileError("a vendor key needs the vendor's name (--vendor)")
    private, public = directory / PRIVATE_FILE, directory / PUBLIC_FILE
    keyid = write_key_pair(private, public, directory / INFO_FILE,
                           {"role": "vendor", "vendor": vendor.strip()}, "a vendor key", force)
    return public, keyid


def vendor_name(key_path: Path) -> str:
    """The vendor named when the key beside ``key_path`` was made (empty if unknown)."""
    try:
        data = json.loads((key_path.parent / INFO_FILE).read_text(encoding="utf-8"))
        return str(data["vendor"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""
