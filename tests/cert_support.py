"""A certification center for tests: a key pair in a folder and certificates signed with
it, built by the real code path (evaluate -> build_statement -> DSSE) from records given
in the test, with no suite run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.cert import dsse
from harness.cert.evaluate import EVALUATOR_VERSION, evaluate
from harness.cert.keys import init_keys, load_private_key
from harness.cert.profile import Profile
from harness.cert.statement import PAYLOAD_TYPE, Issue, build_statement, encode
from harness.results.record_files import RECORDS_FILE, RUN_FILE, sha256_file, write_json

MINI = {
    "name": "hardening-check", "version": "1", "kind": "framework",
    "title_zh": "加固检查", "title_en": "Hardening check",
    "scopes": {"full": {"title_zh": "完整", "title_en": "Full"}},
    "criteria": [
        {"id": "ops", "title_zh": "算子", "title_en": "Operators", "suite": "operators",
         "thresholds": {"full": 1.0, "limited": 0.5}},
        {"id": "contract", "title_zh": "契约", "title_en": "Contract", "suite": "contract",
         "thresholds": {"full": 1.0}},
    ],
}
LABEL = "t"
RECORDS = [{"target": LABEL, "suite": "operators", "case": f"test_op_{i}", "status": "pass",
            "tags": {}} for i in range(3)] + [
    {"target": LABEL, "suite": "contract", "case": "test_identity", "status": "pass",
     "tags": {}}]
IDENTITY = {"name": LABEL, "kind": "framework", "vendor": "Test", "driver_version": "1",
            "runtime": "none", "runtime_version": "0"}


def write_run(results: Path, run_id: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """A finished run folder holding ``records``; returns its citation."""
    run_dir = results / run_id
    run_dir.mkdir(parents=True)
    (run_dir / RECORDS_FILE).write_text(
        "".join(json.dumps(dict(r, run_id=run_id), sort_keys=True) + "\n" for r in records),
        encoding="utf-8")
    write_json(run_dir / RUN_FILE, {
        "schema_version": "1.1", "run_id": run_id, "harness_version": "0",
        "finished_at": "2026-12-02T00:00:01+00:00", "exit_status": 1,
        "targets": {LABEL: IDENTITY}, "environment": {"platform_id": "ab" * 32}})
    return {"run_id": run_id, "records_sha256": sha256_file(run_dir / RECORDS_FILE),
            "run_json_sha256": sha256_file(run_dir / RUN_FILE), "records": len(records),
            "target_records": len(records), "suites": sorted({r["suite"] for r in records})}


class Center:
    """A center key in a folder, and certificates signed with it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        pair, self.keyid = init_keys(root / "keys", "测试中心 / Test Center")
        self.key = load_private_key(pair.private)
        self.pubkey_file = pair.public
        self.public = self.key.public_key()
        self.certs = root / "certs"
        self.certs.mkdir()

    def statement(self, profile: Profile | None = None,
                  records: list[dict[str, Any]] | None = None,
                  runs: list[dict[str, Any]] | None = None,
                  evaluator: str = EVALUATOR_VERSION) -> dict[str, Any]:
        profile = profile or Profile.from_dict(MINI)
        records = RECORDS if records is None else records
        runs = runs or [{"run_id": "r1", "records_sha256": "0" * 64,
                         "run_json_sha256": "1" * 64, "records": len(records),
                         "target_records": len(records),
                         "suites": sorted({r["suite"] for r in records})}]
        issue = Issue(
            profile=profile, evaluation=evaluate(profile, "full", records, evaluator),
            label=LABEL, identity=IDENTITY, capabilities={},
            environment={"platform_id": "ab" * 32, "cpu_model": "cpu"}, runs=runs,
            files={"driver": [], "suites": [], "models": []}, distributions=[],
            records=records, harness={"version": "0"},
            issuer={"name": "c", "keyid": self.keyid}, valid_days=30)
        return build_statement(issue, "0" * 64)

    def sign(self, statement: dict[str, Any] | bytes) -> bytes:
        body = statement if isinstance(statement, bytes) else encode(statement)
        return json.dumps(dsse.sign(PAYLOAD_TYPE, body, self.key, self.keyid)).encode()

    def write(self, statement: dict[str, Any], folder: Path | None = None) -> Path:
        folder = folder or self.certs
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{statement['predicate']['certificate_id']}.dsse.json"
        path.write_bytes(self.sign(statement))
        return path
