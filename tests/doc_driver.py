"""The driver of ``docs/driver-api.md`` section 10, taken from the page itself.

Tests use it as a vendor would: the code block is written to a folder of its own,
"installed" as the distribution ``acme-ref`` by the ``.dist-info`` folder pip would
write (so ``importlib.metadata`` finds its version), and registered through
``SHIPEI_PLUGINS``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tests.conftest import REPO

DOC = REPO / "docs" / "driver-api.md"
TARGET = "acme-ref"
MODULE = "acme_ref"
VERSION = "0.1.0"


def doc_driver_source() -> str:
    """The Python block of the page's "A complete driver" section."""
    section = DOC.read_text(encoding="utf-8").split("## 10. A complete driver", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "docs/driver-api.md section 10 has no python block"
    return match.group(1)


def install_doc_driver(directory: Path) -> dict[str, str]:
    """Write the driver into ``directory`` and return the environment that registers it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{MODULE}.py").write_text(doc_driver_source(), encoding="utf-8")
    dist_info = directory / f"{MODULE}-{VERSION}.dist-info"
    dist_info.mkdir(exist_ok=True)
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {TARGET}\nVersion: {VERSION}\n", encoding="utf-8")
    python_path = os.pathsep.join(filter(None, [str(directory), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": python_path, "SHIPEI_PLUGINS": f"{MODULE}:provide_targets"}
