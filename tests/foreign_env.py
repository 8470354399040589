"""A small venv with numpy 1.x, built once under the Shipei cache, for wire tests.

Also the functions those tests run inside a worker through ``Host.call``: they
import only the standard library, numpy and the harness's codec, so they run
under whichever interpreter the worker has.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

#: what the foreign environment holds: a numpy major version other than the harness's
REQUIREMENTS = ("numpy<2", "onnxruntime==1.20.1", "ml_dtypes<0.6")
#: where it is built: a test environment outlives the session's own SHIPEI_CACHE_DIR
#: (built once per machine, not downloaded again by every test session)
VENVS_ENV = "SHIPEI_TEST_VENVS"


def numpy1_python() -> tuple[Path | None, str]:
    """The foreign venv's python (building it on first use), or None and why not."""
    root = Path(os.environ.get(VENVS_ENV) or Path.home() / ".cache" / "shipei-test-venvs")
    folder = root / "numpy1"
    folder.parent.mkdir(parents=True, exist_ok=True)
    python = folder / "bin" / "python"
    marker = folder / ".complete"
    if marker.exists() and python.exists():
        return python, ""
    steps = ([sys.executable, "-m", "venv", "--clear", str(folder)],
             [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
              *REQUIREMENTS])
    for argv in steps:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=900,
                                  check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"{argv[0]}: {exc}"
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
            return None, f"{' '.join(argv[:4])} failed: {lines[-1]}"
    marker.write_text(" ".join(REQUIREMENTS) + "\n")
    return python, ""


# -- run inside a worker through Host.call ----------------------------------------

def echo(executable: Any, payload: Any) -> Any:
    """Return the payload as the worker decoded it, plus what its numpy calls each dtype."""
    import numpy as np

    def kinds(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return value.dtype.name
        if isinstance(value, dict):
            return {k: kinds(v) for k, v in value.items()}
        return type(value).__name__

    return {"value": payload, "dtypes": kinds(payload), "numpy": np.__version__}


def shout(executable: Any, payload: Any) -> str:
    """Write to standard output three ways, as a chatty runtime would, then answer."""
    print("hello from print", flush=True)
    sys.stdout.write("hello from sys.stdout\n")
    sys.stdout.flush()
    os.write(1, b"hello from fd 1\n")
    return "answered"


def unsendable(executable: Any, payload: Any) -> Any:
    """Return something no wire carries (a driver bug: the target's error)."""
    return object()
