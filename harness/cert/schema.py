"""Checking signed JSON against the certificate schemas in ``harness/schema/`` before any
of it is used, so a malformed but validly signed document is refused with one line.

The checks run on data an attacker may shape (anyone can craft a payload; only a
signature makes it the center's), so they bound nesting depth first: JSON nested
deeper than :data:`MAX_DEPTH` is refused before a recursive validator sees it.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schema"
#: deeper than any document Shipei writes (a predicate nests about 8 levels)
MAX_DEPTH = 48


class SchemaError(ValueError):
    """A document that does not match its schema; the message is one line."""


def loads(text: str | bytes, what: str) -> Any:
    """``json.loads`` that raises :class:`SchemaError` (one line) on any bad input,
    deeply nested input included."""
    try:
        return json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SchemaError(f"{what} is not JSON ({exc})") from None
    except RecursionError:
        raise SchemaError(f"{what} is nested too deeply") from None


def depth(data: Any) -> int:
    """How deeply ``data`` nests lists and objects (iteratively: no recursion limit)."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        deepest = max(deepest, level)
        if level > MAX_DEPTH:
            return level
        stack.extend((child, level + 1) for child in children)
    return deepest


@cache
def schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))


def _where(error: jsonschema.ValidationError) -> str:
    return "/".join(str(p) for p in error.absolute_path) or "(top level)"


def validate(data: Any, schema_name: str, what: str) -> None:
    """Raise :class:`SchemaError` unless ``data`` matches ``harness/schema/<schema_name>``."""
    if depth(data) > MAX_DEPTH:
        raise SchemaError(f"{what} is nested more than {MAX_DEPTH} levels deep")
    validator = jsonschema.Draft202012Validator(schema(schema_name))
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is not None:
        message = " ".join(error.message.split())
        if len(message) > 160:
            message = message[:157] + "..."
        raise SchemaError(f"{what}: {_where(error)}: {message}")
