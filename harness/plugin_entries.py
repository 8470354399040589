"""``SHIPEI_PLUGINS``: what a development environment adds without installing a package.

Each entry names its group, as an installed package's entry point does::

    SHIPEI_PLUGINS="targets=acme_shipei:provide_targets,suites=acme_suite:SUITE"

Groups (the entry-point group each stands for): ``targets`` (``shipei.targets``: a callable
returning :class:`~harness.driver.registry.TargetSpec` objects), ``suites``
(``shipei.suites``: a :class:`~harness.cases.suite_registry.SuiteSpec`, a list of them or a
callable returning them) and ``plugins`` (``shipei.plugins``: an object or module with
hook implementations, :mod:`harness.hookspec`). Entries are separated by ``,`` or ``;``.

The older form without a group (``module:attribute``) still works for a target provider,
as it always did; each loader also still takes a grouped-less entry that is plainly its own
kind (a ``SuiteSpec`` object, a hook plugin), but a callable without a group is read as a
target provider, so a failing one is reported with the advice to name its group.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

PLUGINS_ENV = "SHIPEI_PLUGINS"
#: group in ``SHIPEI_PLUGINS`` -> the entry-point group it stands for
GROUPS = {"targets": "shipei.targets", "suites": "shipei.suites", "plugins": "shipei.plugins"}
#: what a failing entry without a group is told
NAME_THE_GROUP = (f"an entry without a group is read as a target provider; name its group: "
                  f"{'|'.join(GROUPS)}=module:attribute")


class PluginEntryError(ValueError):
    """A ``SHIPEI_PLUGINS`` entry that cannot be read; the message is one line."""

    def __init__(self, message: str, text: str = "") -> None:
        super().__init__(message)
        self.text = text

    @property
    def origin(self) -> str:
        return f"{PLUGINS_ENV} {self.text!r}"


@dataclass(frozen=True)
class PluginEntry:
    """One ``SHIPEI_PLUGINS`` entry: its group (None in the older form) and the
    ``module:attribute`` it names."""

    group: str | None
    reference: str
    text: str

    @property
    def origin(self) -> str:
        """How registries name the entry (in ``broken`` and in a spec's ``origin``)."""
        return f"{PLUGINS_ENV} {self.text!r}"


def parse_entry(text: str) -> PluginEntry:
    """``GROUP=module:attribute`` or the older ``module:attribute``."""
    text = text.strip()
    group, sep, reference = text.partition("=")
    if not sep:
        group, reference = "", text
    group, reference = group.strip(), reference.strip()
    if sep and group not in GROUPS:
        raise PluginEntryError(f"unknown group {group!r}; known: {', '.join(GROUPS)}", text)
    module, _, _ = reference.partition(":")
    if not module or not all(part.isidentifier() for part in module.split(".")):
        raise PluginEntryError(f"not GROUP=module:attribute (GROUP one of "
                               f"{', '.join(GROUPS)})", text)
    return PluginEntry(group or None, reference, text)


def plugin_entries(value: str | None = None) -> list[PluginEntry | PluginEntryError]:
    """Every entry of ``SHIPEI_PLUGINS`` (or ``value``) in order; an entry that cannot be
    read is returned as its :class:`PluginEntryError`, for the target registry to list as
    broken (one bad entry never hides the others)."""
    raw = os.environ.get(PLUGINS_ENV, "") if value is None else value
    found: list[PluginEntry | PluginEntryError] = []
    for text in (t.strip() for t in re.split(r"[,;]", raw)):
        if not text:
            continue
        try:
            found.append(parse_entry(text))
        except PluginEntryError as exc:
            found.append(exc)
    return found


def entries_for(group: str, value: str | None = None) -> list[PluginEntry]:
    """The readable entries of ``group`` and those without a group (the older form)."""
    if group not in GROUPS:
        raise PluginEntryError(f"unknown plugin group {group!r}")
    return [e for e in plugin_entries(value)
            if isinstance(e, PluginEntry) and e.group in (group, None)]
