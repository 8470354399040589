"""The operator suite's case list: cached by what it depends on, rebuilt when corrupt."""

from __future__ import annotations

import pytest

from suites.operators import onnx_cases


def _described(cases: list) -> list:
    return [(c.name, c.rtol, c.atol, c.tags) for c in cases]


def test_the_cached_list_is_the_list_built_from_onnx() -> None:
    cached = onnx_cases.all_cases()
    built = [onnx_cases._case_from_row(row, {c.name: c for c in cached})
             for row in onnx_cases._build_rows()]
    assert _described(cached) == _described(built)
    by_name = {c.name: c for c in cached}
    loaded = by_name["test_abs"].load()
    assert loaded.model_bytes == loaded.model.SerializeToString()  # sent as it was cached


def test_the_list_is_read_from_its_cache_and_rebuilt_when_corrupt(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPEI_CACHE_DIR", str(tmp_path))
    builds: list[int] = []
    rows = [("dir", "test_x", str(tmp_path), 1e-3, 1e-7, {"op_type": "X"})]
    monkeypatch.setattr(onnx_cases, "_build_rows", lambda: builds.append(1) or list(rows))
    assert [c.name for c in onnx_cases.all_cases()] == ["test_x"]
    assert [c.name for c in onnx_cases.all_cases()] == ["test_x"] and builds == [1]
    (cache,) = (tmp_path / "operator-cases").iterdir()
    cache.write_bytes(b"not a pickle")
    assert [c.name for c in onnx_cases.all_cases()] == ["test_x"] and builds == [1, 1]


def test_the_cache_keys_name_every_package_the_references_come_from() -> None:
    """ml_dtypes computes the references of the sub-byte casts (0.6 and 0.7 differ)."""
    key = onnx_cases._case_list_key()
    assert all(f"{name}-" in key for name in ("onnx", "numpy", "ml_dtypes"))
