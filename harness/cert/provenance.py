"""Where a certificate's evidence was made: the center's own lab (the default, no
``provenance`` field in the predicate) or a vendor's lab.

``provenance`` is a JSON object signed into the predicate::

    {"source": "vendor", "lab": "ACME test lab", ...}   # any further keys are kept

With ``source = "vendor"`` the runs were made on the vendor's machine, so
:func:`harness.cert.evidence.check_run` does not require them to come from the
certifying machine's platform and package versions (their platform is still the one
the run recorded and hashed, and it is what the certificate names). Checking how the
vendor's evidence reached the center (a chain of custody) is the caller's job: pass a
``chain_check`` to :func:`harness.cert.verify.verify_certificate`.
"""

from __future__ import annotations

from typing import Any

CENTER = "center"
VENDOR = "vendor"
SOURCES = (CENTER, VENDOR)


class ProvenanceError(ValueError):
    """A provenance object that is not one; the message is one line."""


def check_provenance(provenance: Any) -> dict[str, Any] | None:
    """``provenance`` as given, after checking its shape; None stays None (the center)."""
    if provenance is None:
        return None
    if not isinstance(provenance, dict) or provenance.get("source") not in SOURCES:
        raise ProvenanceError(f"provenance must be an object whose source is one of {SOURCES}")
    return provenance


def from_vendor_lab(provenance: dict[str, Any] | None) -> bool:
    return provenance is not None and provenance.get("source") == VENDOR


def describe(provenance: dict[str, Any] | None) -> str:
    """One line for people: where the evidence was made."""
    if not from_vendor_lab(provenance):
        return "center lab"
    lab = (provenance or {}).get("lab")
    return f"vendor lab{f' ({lab})' if lab else ''}"
