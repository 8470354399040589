"""The center's revocation list beside its certificates: which certificates a folder or
a static registry holds, and carrying a changed list into the registry. Shared by
``shipei cert revoke|revocations`` and ``shipei db revoke``, so neither command module
imports the other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.cert.publish import CertificateRegistryError, mark_revoked_page, refresh
from harness.cert.revocation import (
    REVOCATIONS_FILE,
    RevocationError,
    find_revocation,
    load_revocations,
)
from harness.cli.common import CliError


def certificate_ids(certificates_dir: Path, registry: Path) -> set[str]:
    """The certificates issued into a certificates folder or published in a registry."""
    ids = {p.name.removesuffix(".dsse.json") for p in certificates_dir.glob("*.dsse.json")
           if p.name != REVOCATIONS_FILE}
    ids |= {p.name.removesuffix(".dsse.json")
            for p in (registry / "certificates").glob("*.dsse.json")}
    return ids


def update_registry(registry: Path, key: Any, master: Path, revoked: str | None = None
                    ) -> None:
    """Carry the master list into a static registry folder, when there is one; with
    ``revoked``, first re-render that certificate's page beside the list to say so."""
    if revoked is not None:
        try:
            entry = find_revocation(load_revocations(master, key.public_key()), revoked)
        except RevocationError as exc:
            raise CliError(str(exc)) from None
        certificate = master.parent / f"{revoked}.dsse.json"
        if entry and certificate.is_file() and mark_revoked_page(certificate, key.public_key(),
                                                                  entry):
            print(f"page marked revoked: {certificate.name.replace('.dsse.json', '.html')}")
    if not (registry / "index.json").exists():
        return
    try:
        refresh(registry, key.public_key(), master)
    except (CertificateRegistryError, OSError) as exc:
        raise CliError(f"the list was written, but the registry was not updated: {exc}") \
            from None
    print(f"registry updated: {registry}")
