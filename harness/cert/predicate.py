"""Checking a signed predicate before any of it is used: its JSON schema
(``harness/schema/certificate-predicate.schema.json``), then what a schema cannot say
(times that parse, a level and its names that agree, the embedded profile that hashes to
its sha256 and lists the same criteria as the predicate). A signature says who wrote a
predicate, not that it is well formed; every failure here is one line."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from harness.cert.evaluate import EVALUATORS
from harness.cert.profile import LEVELS, Profile, ProfileError, definition_digest
from harness.cert.schema import SchemaError, validate

PREDICATE_SCHEMA = "certificate-predicate.schema.json"


class PredicateError(ValueError):
    """A predicate that is not a well-formed certificate; the message is one line."""


def parse_time(stamp: str) -> datetime:
    parsed = datetime.fromisoformat(stamp)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _times(predicate: dict[str, Any]) -> None:
    try:
        issued = parse_time(predicate["issued_at"])
        expires = parse_time(predicate["expires_at"])
    except ValueError:
        raise PredicateError("issued_at and expires_at must be ISO 8601 times") from None
    if expires <= issued:
        raise PredicateError("expires_at is not after issued_at")


def evaluator_version(predicate: dict[str, Any]) -> str:
    """The evaluator a certificate's level was computed with (before the field: "1")."""
    return str(predicate.get("evaluator_version", "1"))


def embedded_profile(predicate: dict[str, Any]) -> Profile:
    """The profile the certificate embeds, after checking it hashes to its sha256."""
    profile = predicate["profile"]
    if definition_digest(profile["definition"]) != profile["sha256"]:
        raise PredicateError("the embedded profile does not match its sha256")
    try:
        return Profile.from_dict(profile["definition"], f"profile {profile['name']}")
    except ProfileError as exc:
        raise PredicateError(f"embedded profile: {exc}") from None


def check_predicate(statement: dict[str, Any]) -> Profile:
    """Raise :class:`PredicateError` unless the statement's subjects and predicate are well
    formed; return the embedded profile."""
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or not subjects or not all(
            isinstance(s, dict) and isinstance(s.get("name"), str)
            and isinstance(s.get("digest"), dict) and isinstance(s["digest"].get("sha256"), str)
            for s in subjects):
        raise PredicateError("subject must be a list of {name, digest: {sha256}}")
    predicate = statement["predicate"]
    try:
        validate(predicate, PREDICATE_SCHEMA, "predicate")
    except SchemaError as exc:
        raise PredicateError(str(exc).removeprefix("predicate: ")) from None
    _times(predicate)
    level = predicate["level"]
    if (level["zh"], level["en"]) != LEVELS[level["id"]]:
        raise PredicateError(f"level {level['id']!r} is named {level['zh']} / {level['en']}")
    version = evaluator_version(predicate)
    if version not in EVALUATORS:
        raise PredicateError(f"evaluator_version {version!r} is not known to this shipei "
                             f"(known: {', '.join(EVALUATORS)}); upgrade shipei to verify it")
    profile = embedded_profile(predicate)
    for key in ("name", "version", "kind"):
        if predicate["profile"][key] != getattr(profile, key):
            raise PredicateError(f"profile.{key} differs from the embedded definition")
    if predicate["scope"]["name"] not in profile.scopes:
        raise PredicateError(f"scope {predicate['scope']['name']!r} is not in the profile")
    listed = [c["id"] for c in predicate["criteria"]]
    defined = [c.id for c in profile.criteria]
    if listed != defined:
        raise PredicateError(f"the certificate lists criteria {listed[:6]}, the profile "
                             f"defines {defined[:6]} (truncated or reordered)")
    return profile
