"""Certification profiles: which suites a target kind needs and the thresholds per level.

A profile is a TOML file (``harness/cert/profiles/<name>.toml`` or any path). Its
``[sets]`` table names lists that criteria refer to as ``"@name"``; its
``[scopes.*]`` tables say which selections of cases a certificate may rest on
(a subset scope caps the level); each ``[[criteria]]`` entry measures one thing
over one suite's records and gives, per level, the threshold to reach. The
level is computed from records by :mod:`harness.cert.evaluate`, never typed in.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.cert.measures import MEASURES, Measure, MeasureError, PassRate, measure_keys
from harness.driver.target import TARGET_KINDS

PROFILES_DIR = Path(__file__).parent / "profiles"
RELEASED_FILE = PROFILES_DIR / "released.json"
PACKAGED = "packaged"
CUSTOM = "custom"

#: levels, best first: id -> (中文, English)
LEVELS: dict[str, tuple[str, str]] = {
    "full": ("完全兼容", "Fully compatible"),
    "limited": ("基本兼容", "Compatible with limitations"),
    "none": ("不兼容", "Not compatible"),
}
#: levels a criterion can set thresholds for (``none`` is what remains)
GRADED_LEVELS = ("full", "limited")
SKIP_POLICIES = ("not_pass", "unmeasured")


PROFILE_KEYS = {"name", "version", "kind", "also_kinds", "title_zh", "title_en", "validity_days",
                "sets", "scopes", "criteria", "performance"}
SCOPE_KEYS = {"title_zh", "title_en", "markexpr", "complete", "max_level"}
#: keys every criterion may have; each measure adds its own (harness.cert.measures)
COMMON_CRITERION_KEYS = {"id", "title_zh", "title_en", "suite", "measure", "thresholds",
                         "match", "exclude_cases", "coverage", "skips", "min_cases", "required",
                         "not_applicable"}
#: [performance] keys: the least a performance case must have measured to count
PERFORMANCE_KEYS = {"min_queries": int, "min_duration_s": float}


class ProfileError(Exception):
    """A profile that cannot be read or is inconsistent; the message is one line."""


def level_label(level: str) -> str:
    zh, en = LEVELS[level]
    return f"{zh} / {en}"


@dataclass(frozen=True)
class Scope:
    """Which cases a certificate rests on. ``complete`` scopes run every case."""

    name: str
    title_zh: str
    title_en: str
    complete: bool
    max_level: str
    markexpr: str | None = None


@dataclass(frozen=True)
class Criterion:
    id: str
    title_zh: str
    title_en: str
    suite: str
    measure: str
    thresholds: dict[str, float]
    #: the measure's class, with the criterion's own measure keys (harness.cert.measures)
    rule: Measure = field(default_factory=PassRate)
    match: dict[str, tuple[str, ...]] = field(default_factory=dict)
    exclude_cases: tuple[str, ...] = ()
    coverage: str | None = None
    skips: str = "not_pass"
    min_cases: int = 1
    #: lowest level that needs this criterion measured; below it, not measured is no bar;
    #: None for a criterion with no thresholds (reported, never required)
    required: str | None = "limited"
    #: case patterns whose skip means "does not apply" (not counted at all), e.g. a
    #: thread-safety check of a driver that does not claim to be thread-safe
    not_applicable: tuple[str, ...] = ()

    def required_for(self, level: str) -> bool:
        """Whether ``level`` needs this criterion measured (and met, if it has a threshold)."""
        return self.required is not None and \
            GRADED_LEVELS.index(level) <= GRADED_LEVELS.index(self.required)


@dataclass(frozen=True)
class Profile:
    name: str
    version: str
    kind: str
    title_zh: str
    title_en: str
    validity_days: int
    suites: tuple[str, ...]
    scopes: dict[str, Scope]
    criteria: tuple[Criterion, ...]
    sets: dict[str, tuple[str, ...]]
    definition: dict[str, Any]
    #: the least a performance case must have measured (``[performance]``): name -> value
    performance: dict[str, float] = field(default_factory=dict)
    #: further target kinds it certifies (a scenario asks chips and frameworks alike)
    also_kinds: tuple[str, ...] = ()

    @property
    def kinds(self) -> tuple[str, ...]:
        """Every target kind this profile certifies, its own ``kind`` first."""
        return (self.kind, *self.also_kinds)

    def certifies(self, kind: Any) -> bool:
        return kind in self.kinds

    @property
    def kinds_text(self) -> str:
        return " or ".join(self.kinds)

    @property
    def sha256(self) -> str:
        return definition_digest(self.definition)

    @property
    def origin(self) -> str:
        """``packaged`` (a released Shipei profile, unchanged) or ``custom``."""
        return profile_origin(self.name, self.version, self.sha256)

    def scope(self, name: str) -> Scope:
        try:
            return self.scopes[name]
        except KeyError:
            raise ProfileError(f"profile {self.name!r} has no scope {name!r}; "
                               f"known: {', '.join(self.scopes)}") from None

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str = "profile") -> Profile:
        return _parse(data, origin)


def definition_digest(definition: dict[str, Any]) -> str:
    canonical = json.dumps(definition, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def available_profiles() -> dict[str, Path]:
    return {p.stem: p for p in sorted(PROFILES_DIR.glob("*.toml"))}


def released_profiles() -> dict[str, dict[str, str]]:
    """name -> version -> sha256 of every packaged profile version Shipei has released
    (``profiles/released.json``): a certificate naming one of them must embed exactly it."""
    data = json.loads(RELEASED_FILE.read_text(encoding="utf-8"))
    return {name: dict(versions) for name, versions in data.items()}


def packaged_names() -> set[str]:
    return set(available_profiles()) | set(released_profiles())


def profile_origin(name: str, version: str, sha256: str) -> str:
    """``packaged`` when (name, version, sha256) is a released packaged profile, else
    ``custom``."""
    released = released_profiles().get(name, {}).get(version)
    return PACKAGED if released == sha256 else CUSTOM


def check_not_posing(profile: Profile) -> None:
    """Refuse a custom profile that reuses a packaged profile's name: a certificate would
    read as "framework v1.0" with other rules."""
    if profile.origin == CUSTOM and profile.name in packaged_names():
        known = ", ".join(f"v{v}" for v in released_profiles().get(profile.name, {}))
        raise ProfileError(f"profile {profile.name!r} v{profile.version} is not the packaged "
                           f"profile of that name (released: {known or 'none'}; sha256 "
                           "differs); give a custom profile a name of its own")


def load_profile(name_or_path: str | Path) -> Profile:
    """A packaged profile by name (``framework``) or a profile file by path.

    ``extends = "other"`` takes the ``[sets]`` and ``[scopes]`` of the packaged
    profile ``other`` (entries of the same name here win); criteria are never
    inherited. The resolved tables are what a certificate embeds.
    """
    data, origin = _read_profile(name_or_path)
    base_name = data.pop("extends", None)
    if base_name is not None:
        if not isinstance(base_name, str) or base_name == data.get("name"):
            raise ProfileError(f"{origin}: extends must name another packaged profile")
        base, _ = _read_profile(base_name)
        if "extends" in base:
            raise ProfileError(f"{origin}: profile {base_name!r} extends another; "
                               "only one level of extends is allowed")
        for table in ("sets", "scopes"):
            data[table] = {**base.get(table, {}), **data.get(table, {})}
    return _parse(data, origin)


def _read_profile(name_or_path: str | Path) -> tuple[dict[str, Any], str]:
    path = Path(name_or_path)
    if not path.suffix:
        known = available_profiles()
        if str(name_or_path) not in known:
            raise ProfileError(f"unknown profile {str(name_or_path)!r}; known profiles: "
                               f"{', '.join(known) or 'none'} (or give a .toml path)")
        path = known[str(name_or_path)]
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(f"cannot read profile {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"profile {path} is not valid TOML: {exc}") from None
    return data, str(path)


def _text(data: dict[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ProfileError(f"{where}: {key!r} must be a non-empty string")
    return value


def _strings(value: Any, where: str, sets: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    """A list of strings, or ``"@set"`` naming one of the profile's sets."""
    if isinstance(value, str) and value.startswith("@"):
        if value[1:] not in sets:
            raise ProfileError(f"{where}: unknown set {value!r}; sets: {', '.join(sets)}")
        return sets[value[1:]]
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProfileError(f"{where}: must be a list of strings or '@set'")
    return tuple(value)


def _numbers(value: Any, where: str) -> dict[str, float]:
    if not isinstance(value, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values()):
        raise ProfileError(f"{where}: must be a table of numbers")
    return {k: float(v) for k, v in value.items()}


def _known_keys(data: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ProfileError(f"{where}: unknown key(s) {', '.join(unknown)}; "
                           f"allowed: {', '.join(sorted(allowed))}")


def _parse_scope(name: str, data: Any, origin: str) -> Scope:
    where = f"{origin}: scopes.{name}"
    if not isinstance(data, dict):
        raise ProfileError(f"{where}: must be a table")
    _known_keys(data, SCOPE_KEYS, where)
    max_level = data.get("max_level", "full")
    if max_level not in GRADED_LEVELS:
        raise ProfileError(f"{where}: max_level must be one of {GRADED_LEVELS}")
    markexpr = data.get("markexpr")
    if markexpr is not None and (not isinstance(markexpr, str) or not markexpr.strip()
                                 or markexpr.lstrip().startswith("-")):
        raise ProfileError(f"{where}: markexpr must be a marker expression (a non-empty "
                           "string not starting with '-')")
    complete = data.get("complete", markexpr is None)
    if complete and markexpr:
        raise ProfileError(f"{where}: a scope that selects cases (markexpr) is not complete")
    return Scope(name, _text(data, "title_zh", where), _text(data, "title_en", where),
                 bool(complete), max_level, markexpr)


def _parse_criterion(index: int, data: Any, origin: str, sets: dict[str, tuple[str, ...]]
                     ) -> Criterion:
    where = f"{origin}: criteria[{index}]"
    if not isinstance(data, dict):
        raise ProfileError(f"{where}: must be a table")
    cid = _text(data, "id", where)
    where = f"{origin}: criterion {cid!r}"
    _known_keys(data, COMMON_CRITERION_KEYS | measure_keys(), where)
    measure = data.get("measure", "pass_rate")
    if measure not in MEASURES:
        raise ProfileError(f"{where}: measure must be one of {tuple(MEASURES)}, not "
                           f"{measure!r}")
    measure_class = MEASURES[measure]
    foreign = sorted(set(data) & (measure_keys() - set(measure_class.keys)))
    if foreign:
        raise ProfileError(f"{where}: {', '.join(foreign)} do(es) not apply to measure "
                           f"{measure!r}")
    try:
        rule = measure_class.parse(data, where, lambda value, at: _strings(value, at, sets))
    except MeasureError as exc:
        raise ProfileError(str(exc)) from None
    thresholds = _numbers(data.get("thresholds"), f"{where}: thresholds")
    unknown = sorted(set(thresholds) - set(GRADED_LEVELS))
    if unknown:
        raise ProfileError(f"{where}: thresholds must set some of {GRADED_LEVELS} (or none, "
                           f"for a criterion that is reported, not graded), not {unknown}")
    if any(not 0.0 <= v <= 1.0 for v in thresholds.values()):
        raise ProfileError(f"{where}: thresholds are fractions between 0 and 1")
    if thresholds.get("full", 1.0) < thresholds.get("limited", 0.0):
        raise ProfileError(f"{where}: the 'full' threshold is below the 'limited' one")
    match_table = data.get("match", {})
    if not isinstance(match_table, dict):
        raise ProfileError(f"{where}: match must be a table of tag -> values")
    match = {k: _strings(v, f"{where}: match.{k}", sets) for k, v in match_table.items()}
    skips = data.get("skips", "not_pass")
    if skips not in SKIP_POLICIES:
        raise ProfileError(f"{where}: skips must be one of {SKIP_POLICIES}")
    coverage = data.get("coverage")
    if coverage is not None and coverage not in match:
        raise ProfileError(f"{where}: coverage {coverage!r} must name a key of match")
    min_cases = data.get("min_cases", 1)
    if not isinstance(min_cases, int) or min_cases < 1:
        raise ProfileError(f"{where}: min_cases must be a positive integer")
    required = _required(data, thresholds, where)
    return Criterion(
        id=cid, title_zh=_text(data, "title_zh", where), title_en=_text(data, "title_en", where),
        suite=_text(data, "suite", where), measure=measure, thresholds=thresholds, rule=rule,
        match=match,
        exclude_cases=_strings(data.get("exclude_cases", []), f"{where}: exclude_cases", sets),
        coverage=coverage, skips=skips, min_cases=min_cases, required=required,
        not_applicable=_strings(data.get("not_applicable", []), f"{where}: not_applicable",
                                sets))


def _required(data: dict[str, Any], thresholds: dict[str, float], where: str) -> str | None:
    """The lowest level that needs the criterion; None for one that sets no threshold
    (reported on the certificate, never a bar to a level)."""
    if not thresholds:
        if "required" in data:
            raise ProfileError(f"{where}: a criterion without thresholds is reported, not "
                               "graded: it cannot be required")
        return None
    required = data.get("required", "limited" if "limited" in thresholds else "full")
    if required not in GRADED_LEVELS or required not in thresholds:
        raise ProfileError(f"{where}: required must be a level the thresholds set")
    return required


def _parse(data: dict[str, Any], origin: str) -> Profile:
    where = origin
    try:
        json.dumps(data)
    except (TypeError, ValueError):
        raise ProfileError(f"{where}: only strings, numbers, booleans, lists and tables "
                           "are allowed (no TOML dates)") from None
    _known_keys(data, PROFILE_KEYS, where)
    kind = data.get("kind")
    if kind not in TARGET_KINDS:
        raise ProfileError(f"{where}: kind must be one of {TARGET_KINDS}")
    also_kinds = data.get("also_kinds", [])
    if not isinstance(also_kinds, list) or any(k not in TARGET_KINDS or k == kind
                                               for k in also_kinds):
        raise ProfileError(f"{where}: also_kinds must list other kinds of {TARGET_KINDS}")
    raw_sets = data.get("sets", {})
    if not isinstance(raw_sets, dict):
        raise ProfileError(f"{where}: [sets] must be a table of lists")
    sets = {k: _strings(v, f"{where}: sets.{k}", {}) for k, v in raw_sets.items()}
    raw_scopes = data.get("scopes", {})
    if not isinstance(raw_scopes, dict) or "full" not in raw_scopes:
        raise ProfileError(f"{where}: a [scopes.full] table is required")
    scopes = {n: _parse_scope(n, s, origin) for n, s in raw_scopes.items()}
    if not scopes["full"].complete:
        raise ProfileError(f"{where}: scopes.full must be complete (no markexpr)")
    raw_criteria = data.get("criteria")
    if not isinstance(raw_criteria, list) or not raw_criteria:
        raise ProfileError(f"{where}: at least one [[criteria]] entry is required")
    criteria = tuple(_parse_criterion(i, c, origin, sets) for i, c in enumerate(raw_criteria))
    ids = [c.id for c in criteria]
    if len(set(ids)) != len(ids):
        raise ProfileError(f"{where}: criterion ids must be unique")
    for level in GRADED_LEVELS:
        if not any(c.required_for(level) for c in criteria):
            raise ProfileError(f"{where}: no criterion is required for level {level!r}")
    suites = tuple(dict.fromkeys(c.suite for c in criteria))
    validity = data.get("validity_days", 365)
    if not isinstance(validity, int) or validity < 1:
        raise ProfileError(f"{where}: validity_days must be a positive integer")
    version = data.get("version")
    if not isinstance(version, str) or not version:
        raise ProfileError(f"{where}: version must be a non-empty string, e.g. \"1.0\"")
    return Profile(
        name=_text(data, "name", where), version=version, kind=kind,
        title_zh=_text(data, "title_zh", where), title_en=_text(data, "title_en", where),
        validity_days=validity, suites=suites, scopes=scopes, criteria=criteria, sets=sets,
        definition=data, performance=_parse_performance(data.get("performance", {}), where),
        also_kinds=tuple(also_kinds))


def _parse_performance(data: Any, where: str) -> dict[str, float]:
    if not isinstance(data, dict):
        raise ProfileError(f"{where}: [performance] must be a table")
    _known_keys(data, set(PERFORMANCE_KEYS), f"{where}: performance")
    found: dict[str, float] = {}
    for key, kind in PERFORMANCE_KEYS.items():
        if key not in data:
            continue
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or (kind is int and not isinstance(value, int)) or not value > 0:
            raise ProfileError(f"{where}: performance.{key} must be a positive "
                               f"{'integer' if kind is int else 'number'}")
        found[key] = value
    return found


def profile_for_kind(kind: str) -> Profile:
    """The packaged profile that certifies targets of ``kind`` (the one named after the
    kind when several do); :class:`ProfileError` when none does."""
    known = available_profiles()
    if kind in known:
        return load_profile(kind)
    for name in known:
        profile = load_profile(name)
        if profile.kind == kind:
            return profile
    raise ProfileError(f"no packaged profile certifies {kind!r} targets")


def measured_suites(kind: str, profile: str | None = None) -> tuple[str, ...]:
    """The suites a profile measures: ``profile`` (a name or TOML path) or, without one, the
    packaged profile for ``kind``. The one way the gate reads profiles (``harness.gate``);
    :class:`ProfileError` when there is no such profile."""
    return (load_profile(profile) if profile else profile_for_kind(kind)).suites
