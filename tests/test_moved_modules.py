"""Drivers and suites written against the flat ``harness/`` keep importing: each old path
is the new module itself (one object, so patches through either name agree), and says
where it went."""

from __future__ import annotations

import importlib
import re
import sys
import warnings
from pathlib import Path

import pytest

from harness.moved import MOVED

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_path_is_the_new_module_and_warns(old: str) -> None:
    sys.modules.pop(f"harness.{old}", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(f"harness.{old}")
    assert module is importlib.import_module(f"harness.{MOVED[old]}")
    messages = [str(w.message) for w in caught if w.category is DeprecationWarning]
    assert any(f"harness.{MOVED[old]}" in m for m in messages), messages


def test_driver_import_of_the_flat_layout_works() -> None:
    sys.modules.pop("harness.target", None)
    with pytest.warns(DeprecationWarning, match="harness.driver.target"):
        from harness.target import Target
    from harness.driver.target import Target as new_target

    assert Target is new_target


def test_names_of_the_old_cases_module_are_forwarded() -> None:
    with pytest.warns(DeprecationWarning, match="harness.cases.case.Case"):
        from harness.cases import Case
    from harness.cases.case import Case as new_case

    assert Case is new_case
    with pytest.raises(ImportError):
        from harness.cases import no_such_name  # noqa: F401


def test_every_new_path_exists_and_no_flat_module_is_left_behind() -> None:
    for new in MOVED.values():
        assert (ROOT / "harness" / f"{new.replace('.', '/')}.py").is_file(), new
    for old in MOVED:
        assert not (ROOT / "harness" / f"{old}.py").exists(), f"harness/{old}.py is back"


def test_architecture_doc_names_every_folder_of_harness() -> None:
    table = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    folders = {p.name for p in (ROOT / "harness").iterdir()
               if p.is_dir() and (p / "__init__.py").exists()}
    named = set(re.findall(r"`harness/(\w+)/`", table))
    assert folders <= named, f"docs/architecture.md does not place {sorted(folders - named)}"


def test_the_repository_imports_only_new_paths() -> None:
    old = re.compile(r"(?:from|import) harness\.(" + "|".join(MOVED) + r")\b")
    offenders = [str(p.relative_to(ROOT)) for top in ("harness", "targets", "suites", "models",
                                                       "bench", "tests")
                 for p in (ROOT / top).rglob("*.py")
                 if p.name != "test_moved_modules.py" and old.search(p.read_text("utf-8"))]
    assert not offenders, offenders
