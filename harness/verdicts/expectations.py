"""Expectations: per-target files of cases known not to pass, each with a reason.

Format (TOML), one table per suite, one entry per case (``fnmatch`` patterns allowed)::

    [operators.test_cast_FLOAT_to_FLOAT8E4M3FN]
    status = "error"
    reason = "onnxruntime CPU has no float8 Cast kernel"

A case with no entry is expected to pass. A result that differs from its
expectation, an unexpected pass included, is an unexpected result. A runtime whose
result is not repeatable (it reads uninitialised memory, say) gets the other results
seen, as Chromium's TestExpectations lists several, in ``also``; its reason says why::

    [operators.test_attention_4d_with_qk_matmul_expanded]
    status = "fail"
    also = ["pass"]
    reason = "nondeterministic: MNN reads uninitialised memory (pass and fail seen)"
"""

from __future__ import annotations

import fnmatch
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.results.case_record import RECORDED_STATUSES, Status

#: what an expectation may name: any recorded status but a pass and the harness's own failure
EXPECTABLE = tuple(s.value for s in RECORDED_STATUSES if s is not Status.PASS and not s.is_infra)
#: what ``also`` may list besides EXPECTABLE (a nondeterministic case that sometimes passes)
ALSO_EXPECTABLE = (*EXPECTABLE, "pass")


class ExpectationsError(Exception):
    pass


@dataclass(frozen=True)
class Expectation:
    status: str
    reason: str
    source: str = ""
    #: further results accepted for a case the runtime does not repeat exactly
    also: tuple[str, ...] = ()

    def accepts(self, status: str) -> bool:
        return status == self.status or status in self.also


@dataclass
class Expectations:
    entries: dict[str, dict[str, Expectation]] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    _pattern_cache: dict[str, list[tuple[str, Expectation]]] = field(
        default_factory=dict, repr=False, compare=False)

    @classmethod
    def load(cls, paths: Iterable[Path | str]) -> Expectations:
        expectations = cls()
        for path in paths:
            expectations.merge_file(path)
        return expectations

    def merge_file(self, path: Path | str) -> None:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ExpectationsError(f"cannot read expectations {path}: "
                                    f"{exc.strerror or exc}") from exc
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ExpectationsError(f"cannot read expectations {path}: not TOML: {exc}"
                                    ) from exc
        self.sources.append(str(path))
        self._pattern_cache.clear()
        for suite, cases in data.items():
            if not isinstance(cases, dict):
                raise ExpectationsError(f"{path}: [{suite}] must be a table of cases")
            for case, entry in cases.items():
                if not isinstance(entry, dict):
                    raise ExpectationsError(f"{path}: {suite}.{case} must be a table with "
                                            "status and reason")
                status, reason = entry.get("status"), entry.get("reason", "")
                if status not in EXPECTABLE:
                    raise ExpectationsError(
                        f"{path}: {suite}.{case}: status must be one of {EXPECTABLE}")
                if not isinstance(reason, str):
                    raise ExpectationsError(f"{path}: {suite}.{case}: reason must be text")
                if not reason.strip():
                    raise ExpectationsError(f"{path}: {suite}.{case}: a reason is required")
                also = entry.get("also", [])
                if not isinstance(also, list) or any(a not in ALSO_EXPECTABLE for a in also):
                    raise ExpectationsError(f"{path}: {suite}.{case}: also must be a list of "
                                            f"statuses from {ALSO_EXPECTABLE}")
                self.entries.setdefault(suite, {})[case] = Expectation(
                    status, reason, str(path), tuple(also))

    def lookup(self, suite: str, case: str) -> Expectation | None:
        cases = self.entries.get(suite, {})
        if case in cases:
            return cases[case]
        for pattern, expectation in self._patterns(suite):
            if fnmatch.fnmatchcase(case, pattern):
                return expectation
        return None

    def _patterns(self, suite: str) -> list[tuple[str, Expectation]]:
        """The suite's fnmatch entries, found once (lookups run once per case)."""
        if suite not in self._pattern_cache:
            self._pattern_cache[suite] = [
                (key, expectation) for key, expectation in self.entries.get(suite, {}).items()
                if any(ch in key for ch in "*?[")]
        return self._pattern_cache[suite]


def judge(status: str, expectation: Expectation | None) -> tuple[bool, str]:
    """(as_expected, explanation) for a case status against its expectation."""
    expected = expectation.status if expectation else "pass"
    if status == expected or (expectation is not None and expectation.accepts(status)):
        return True, ""
    if status == "skip" and expectation is None:
        return True, ""  # a declared capability gap is reported, not an unexpected result
    if status == "pass":
        return False, (f"unexpected pass: expected {expected} ({expectation.reason}); "
                       f"remove the entry from {expectation.source}") if expectation else ""
    if expectation is None:
        return False, f"expected pass, got {status}"
    return False, f"expected {expected} ({expectation.reason}), got {status}"


def _toml_key(text: str) -> str:
    if text.replace("_", "").replace("-", "").isalnum():
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(records: Iterable[dict[str, Any]], previous: Expectations | None = None,
           header: str = "") -> str:
    """An expectations file from a run's non-pass records, keeping reviewed reasons.

    Entries of ``previous`` for cases the run did not exercise (another suite, a
    subset run) are kept unchanged.
    """
    by_suite: dict[str, dict[str, Expectation]] = {}
    records = list(records)
    covered = {(r["suite"], r["case"]) for r in records}
    for suite, cases in (previous.entries if previous else {}).items():
        for case, kept in cases.items():  # entries this run did not exercise stay as they are
            if (suite, case) not in covered:
                by_suite.setdefault(suite, {})[case] = kept
    for record in records:
        status = record.get("status")
        suite, case = record["suite"], record["case"]
        old = previous.lookup(suite, case) if previous else None
        if old is not None and old.also and old.accepts(status):
            by_suite.setdefault(suite, {})[case] = old  # a reviewed nondeterministic case
            continue
        if status not in EXPECTABLE or status == "skip":  # skips are declared, not expected
            continue
        reason = old.reason if old and old.status == status else (
            record.get("message") or status).splitlines()[0][:200]
        by_suite.setdefault(suite, {})[case] = Expectation(status, reason)
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    for suite in sorted(by_suite):
        for case in sorted(by_suite[suite]):
            entry = by_suite[suite][case]
            escaped = entry.reason.replace("\\", "\\\\").replace('"', '\\"')
            lines += ["", f"[{_toml_key(suite)}.{_toml_key(case)}]", f'status = "{entry.status}"']
            if entry.also:
                lines.append("also = [" + ", ".join(f'"{a}"' for a in entry.also) + "]")
            lines.append(f'reason = "{escaped}"')
    return "\n".join(lines).lstrip("\n") + "\n"
