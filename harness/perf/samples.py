"""Latency samples on disk: ``results/<run-id>/samples/<target>__<case>.npz``.

One ``.npz`` per measured case: ``latency_ns`` (int64, one per inference, in issue
order), ``start_ns`` (int64, each inference's start relative to the first) and
``samples_per_query`` (the batch size). LoadGen's own logs sit beside it. The
record's ``metrics.samples_file`` holds the path relative to the run folder.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLES_DIR = "samples"


@dataclass
class Samples:
    latency_ns: np.ndarray
    start_ns: np.ndarray
    samples_per_query: int = 1


def file_stem(target_label: str, case: str) -> str:
    """A file-name-safe, collision-free stem for one target label and case."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", target_label).strip("_") or "target"
    if safe != target_label:
        safe += "-" + hashlib.sha256(target_label.encode()).hexdigest()[:6]
    return f"{safe}__{re.sub(r'[^A-Za-z0-9._-]+', '_', case)}"


def save(run_dir: Path, stem: str, samples: Samples, logs: dict[str, str] | None = None
         ) -> tuple[str, list[str]]:
    """Write samples (and LoadGen logs); return their paths relative to ``run_dir``."""
    folder = run_dir / SAMPLES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.npz"
    tmp = folder / f".{stem}.tmp.npz"
    np.savez(tmp, latency_ns=np.asarray(samples.latency_ns, dtype=np.int64),
             start_ns=np.asarray(samples.start_ns, dtype=np.int64),
             samples_per_query=np.int64(samples.samples_per_query))
    tmp.replace(path)
    written = []
    for name, text in sorted((logs or {}).items()):
        log_path = folder / f"{stem}.{name}"
        log_path.write_text(text, encoding="utf-8")
        written.append(f"{SAMPLES_DIR}/{log_path.name}")
    return f"{SAMPLES_DIR}/{path.name}", written


class SamplesError(Exception):
    """A samples file is missing or unreadable."""


def load(run_dir: Path, relative: str) -> Samples:
    path = run_dir / relative
    try:
        with np.load(path, allow_pickle=False) as data:
            return Samples(data["latency_ns"].astype(np.int64), data["start_ns"].astype(np.int64),
                           int(data["samples_per_query"]))
    except (OSError, KeyError, ValueError) as exc:
        raise SamplesError(f"cannot read samples {path}: {exc}") from None
