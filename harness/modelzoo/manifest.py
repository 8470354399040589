"""Model manifests: one TOML file per model in the zoo, parsed and validated.

A manifest names the model, its task and precision class, where its bytes come
from and their sha256, how its test inputs are produced, which outputs are
judged and how. Every problem is a :class:`ManifestError` with one line that
names the file and the field. The format is described in ``docs/models.md``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_SCHEMA_VERSION = 1
TASKS = ("classification", "detection", "recognition", "vad", "encoder", "generic")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
OUTPUT_KINDS = ("tensor", "probabilities", "logits", "state")
DTYPES = ("float32", "float16", "float64", "int64", "int32", "int8", "uint8", "bool")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_]*$")
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
TOLERANCE_KEYS = ("rtol", "atol", "min_cosine", "min_top1", "min_top5", "tie_fraction")


class ManifestError(Exception):
    """A manifest that cannot be used; the message is one line naming file and field."""


@dataclass(frozen=True)
class Source:
    """Where the model bytes come from: exactly one of package, generator, file."""

    package: str = ""
    path: str = ""
    install: str = ""
    generator: str = ""
    file: str = ""
    regenerate: str = ""
    expected_outputs: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return "package" if self.package else "generator" if self.generator else "file"

    def describe(self) -> str:
        if self.package:
            return f"{self.package}:{self.path}"
        return self.generator or self.file


@dataclass(frozen=True)
class ManifestInput:
    name: str
    dtype: str
    shape: tuple[int | str, ...]
    generator: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OutputSpec:
    name: str
    kind: str = "tensor"
    class_axis: int = -1

    @property
    def is_classifier(self) -> bool:
        return self.kind in ("probabilities", "logits")


@dataclass(frozen=True)
class Streaming:
    """A stateful model run over a whole signal chunk by chunk, carrying state."""

    chunk_input: str
    chunk: int
    context: int = 0
    carry: Mapping[str, str] = field(default_factory=dict)  # input <- previous output
    collect: tuple[str, ...] = ()  # outputs stacked over the steps


@dataclass(frozen=True)
class Manifest:
    name: str
    title: str
    task: str
    precision: str
    sha256: str
    source: Source
    inputs: tuple[ManifestInput, ...]
    outputs: tuple[OutputSpec, ...]
    data_sets: tuple[Mapping[str, int], ...]
    tolerance: Mapping[str, float] = field(default_factory=dict)
    streaming: Streaming | None = None
    slow: bool = False
    representative: bool = False
    notes: str = ""
    license: str = ""  # the model's license, as its source declares it
    path: Path = Path()

    @property
    def case_name(self) -> str:
        return f"test_{self.name}"

    def output(self, name: str) -> OutputSpec:
        for spec in self.outputs:
            if spec.name == name:
                return spec
        raise KeyError(name)


class _Reader:
    """Typed access to one TOML table with errors that name the file and field."""

    def __init__(self, path: Path, table: Mapping[str, Any], where: str = "") -> None:
        self.path, self.table, self.where = path, table, where

    def fail(self, key: str, problem: str) -> ManifestError:
        field_name = f"{self.where}{key}" if key else self.where.rstrip(".")
        return ManifestError(f"{self.path.name}: {field_name}: {problem}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in self.table:
            if default is ...:
                raise self.fail(key, "required field is missing")
            return default
        value = self.table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:  # bool is an int in Python
            raise self.fail(key, f"expected {_kind_name(kind)}, got a boolean")
        if not isinstance(value, kinds):
            raise self.fail(key, f"expected {_kind_name(kind)}, got {type(value).__name__}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: Any = ...) -> str:
        value = self.get(key, str, default)
        if value not in choices:
            raise self.fail(key, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def unknown(self, known: tuple[str, ...]) -> None:
        extra = sorted(set(self.table) - set(known))
        if extra:
            raise self.fail(extra[0], f"unknown field (known: {', '.join(known)})")

    def sub(self, key: str, table: Mapping[str, Any]) -> _Reader:
        return _Reader(self.path, table, f"{self.where}{key}.")


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
             list: "an array", dict: "a table"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _source(reader: _Reader) -> Source:
    reader.unknown(("package", "path", "install", "generator", "file", "regenerate",
                    "expected_outputs"))
    kinds = [k for k in ("package", "generator", "file") if k in reader.table]
    if len(kinds) != 1:
        raise reader.fail("", "give exactly one of package, generator or file")
    source = Source(
        package=reader.get("package", str, ""), path=reader.get("path", str, ""),
        install=reader.get("install", str, ""), generator=reader.get("generator", str, ""),
        file=reader.get("file", str, ""), regenerate=reader.get("regenerate", str, ""),
        expected_outputs=tuple(reader.get("expected_outputs", list, [])),
    )
    if source.package and not (source.path and source.install):
        raise reader.fail("path" if not source.path else "install",
                          "a package source needs path and install")
    if source.generator and ":" not in source.generator:
        raise reader.fail("generator", "must be module:function")
    if source.expected_outputs and not source.package:
        raise reader.fail("expected_outputs", "only a package source ships expected outputs")
    return source


def _shape(reader: _Reader, key: str) -> tuple[int | str, ...]:
    shape = reader.get(key, list)
    for dim in shape:
        if isinstance(dim, bool) or not isinstance(dim, (int, str)) or (
                isinstance(dim, int) and dim < 0):
            raise reader.fail(key, f"dimension {dim!r} is neither a size nor a symbol")
    return tuple(shape)


def _inputs(reader: _Reader, tables: list[Any]) -> tuple[ManifestInput, ...]:
    specs = []
    for index, table in enumerate(tables):
        if not isinstance(table, dict):
            raise reader.fail(f"inputs[{index}]", "must be a table")
        sub = reader.sub(f"inputs[{index}]", table)
        sub.unknown(("name", "dtype", "shape", "generator", "params"))
        specs.append(ManifestInput(sub.get("name", str), sub.choice("dtype", DTYPES),
                               _shape(sub, "shape"), sub.get("generator", str),
                               dict(sub.get("params", dict, {}))))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise reader.fail("inputs", "an input name is listed twice")
    return tuple(specs)


def _outputs(reader: _Reader, tables: list[Any]) -> tuple[OutputSpec, ...]:
    specs = []
    for index, table in enumerate(tables):
        if not isinstance(table, dict):
            raise reader.fail(f"outputs[{index}]", "must be a table")
        sub = reader.sub(f"outputs[{index}]", table)
        sub.unknown(("name", "kind", "class_axis"))
        specs.append(OutputSpec(sub.get("name", str), sub.choice("kind", OUTPUT_KINDS, "tensor"),
                                sub.get("class_axis", int, -1)))
    if not specs:
        raise reader.fail("outputs", "at least one output must be judged")
    return tuple(specs)


def _data_sets(reader: _Reader, tables: list[Any]) -> tuple[Mapping[str, int], ...]:
    sets = []
    for index, table in enumerate(tables or [{}]):
        if not isinstance(table, dict):
            raise reader.fail(f"data_sets[{index}]", "must be a table")
        sub = reader.sub(f"data_sets[{index}]", table)
        sub.unknown(("dims",))
        dims = sub.get("dims", dict, {})
        for symbol, size in dims.items():
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise sub.fail(f"dims.{symbol}", "must be a positive integer")
        sets.append(dict(dims))
    return tuple(sets)


def _tolerance(reader: _Reader) -> dict[str, float]:
    reader.unknown(TOLERANCE_KEYS)
    tolerance = {}
    for key in TOLERANCE_KEYS:
        if key in reader.table:
            value = reader.get(key, (int, float))
            if value < 0:
                raise reader.fail(key, "must not be negative")
            tolerance[key] = float(value)
    return tolerance


def _streaming(reader: _Reader) -> Streaming:
    reader.unknown(("chunk_input", "chunk", "context", "carry", "collect"))
    chunk = reader.get("chunk", int)
    context = reader.get("context", int, 0)
    if chunk < 1 or context < 0:
        raise reader.fail("chunk", "chunk must be positive and context not negative")
    carry = reader.get("carry", dict, {})
    for key, value in carry.items():
        if not isinstance(value, str):
            raise reader.fail(f"carry.{key}", "must name an output")
    return Streaming(reader.get("chunk_input", str), chunk, context, dict(carry),
                     tuple(reader.get("collect", list, [])))


def parse_manifest(text: str, path: Path) -> Manifest:
    """Parse and validate one manifest's text (``path`` names it in errors)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{path.name}: not valid TOML: {exc}") from None
    top = _Reader(path, data)
    top.unknown(("schema_version", "name", "title", "task", "precision", "sha256", "source",
                 "inputs", "outputs", "data_sets", "tolerance", "streaming", "slow",
                 "representative", "notes", "license"))
    version = top.get("schema_version", int)
    if version != MANIFEST_SCHEMA_VERSION:
        raise top.fail("schema_version", f"{version} is not supported "
                                         f"(this harness reads {MANIFEST_SCHEMA_VERSION})")
    name = top.get("name", str)
    if not NAME_PATTERN.match(name):
        raise top.fail("name", f"{name!r} must be lower-case letters, digits and _")
    if name != path.stem:
        raise top.fail("name", f"{name!r} differs from the file name {path.stem!r}")
    sha256 = top.get("sha256", str).lower()
    streaming = top.get("streaming", dict, None)
    if not SHA256_PATTERN.match(sha256):
        raise top.fail("sha256", "must be 64 hexadecimal digits")
    manifest = Manifest(
        name=name,
        title=top.get("title", str, name),
        task=top.choice("task", TASKS),
        precision=top.choice("precision", PRECISIONS),
        sha256=sha256,
        source=_source(top.sub("source", top.get("source", dict))),
        inputs=_inputs(top, top.get("inputs", list)),
        outputs=_outputs(top, top.get("outputs", list)),
        data_sets=_data_sets(top, top.get("data_sets", list, [])),
        tolerance=_tolerance(top.sub("tolerance", top.get("tolerance", dict, {}))),
        streaming=_streaming(top.sub("streaming", streaming)) if streaming is not None else None,
        slow=top.get("slow", bool, False),
        representative=top.get("representative", bool, False),
        notes=top.get("notes", str, ""),
        license=top.get("license", str, ""),
        path=path,
    )
    _check_streaming(top, manifest)
    return manifest


def _check_streaming(reader: _Reader, manifest: Manifest) -> None:
    streaming = manifest.streaming
    if streaming is None:
        return
    inputs = {spec.name for spec in manifest.inputs}
    outputs = {spec.name for spec in manifest.outputs}
    if streaming.chunk_input not in inputs:
        raise reader.fail("streaming.chunk_input", f"{streaming.chunk_input!r} is not an input")
    for name, output in streaming.carry.items():
        if name not in inputs:
            raise reader.fail(f"streaming.carry.{name}", "is not an input")
        if output not in outputs:
            raise reader.fail(f"streaming.carry.{name}", f"{output!r} is not a judged output")
    for name in streaming.collect:
        if name not in outputs:
            raise reader.fail("streaming.collect", f"{name!r} is not a judged output")


def load_manifest(path: Path) -> Manifest:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path.name}: cannot read: {exc}") from None
    return parse_manifest(text, path)
