"""The one-line answer to a target string with options its driver does not take."""

from __future__ import annotations

import inspect

from harness.driver.registry import Registry, TargetRequest, load_object


def accepted_options(registry: Registry, name: str) -> list[str] | None:
    """The ``key=value`` options target ``name``'s factory takes (its keyword parameters
    but the configuration and those its provider fixes), or None when they cannot be known
    (a factory taking ``**kwargs``, or one whose signature cannot be read)."""
    spec = registry.spec(name)
    try:
        parameters = inspect.signature(load_object(spec.factory)).parameters.values()
    except (TypeError, ValueError, ImportError, AttributeError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    fixed = {"self", "configuration", *spec.kwargs}
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in parameters if p.name not in fixed and p.kind in named]


def describe_option_error(registry: Registry, request: TargetRequest, exc: Exception) -> str:
    """What is wrong with ``request``'s options, in the user's words: the unknown keys and
    the valid ones, not the Python exception of the driver's constructor."""
    accepted = accepted_options(registry, request.name)
    if accepted is None:
        return f"bad options for target {request.label!r}: {exc}"
    unknown = [key for key in request.options if key not in accepted]
    valid = ", ".join(accepted) if accepted else "none"
    if unknown:
        return (f"target {request.name!r} has no option {', '.join(map(repr, unknown))} "
                f"(in {request.label!r}); its options: {valid}")
    return f"bad option value for target {request.label!r}: {exc} (its options: {valid})"
