"""Adversarial inputs to certification (issue 16, items 1 to 5), each reproduced on the
real code path: option injection through ``run.json``, registries that would un-revoke,
verification without a revocation list, profiles posing as packaged ones and signed but
malformed predicates. None of them may give a traceback or a certificate."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness.cert.evidence import EvidenceError, changed_between, check_commit, is_commit_id
from harness.cert.profile import Profile, ProfileError


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          cwd=root, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "repo"
    (root / "harness").mkdir(parents=True)
    (root / "harness" / "judge.py").write_text("v1\n")
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "one")
    return root, _git(root, "rev-parse", "HEAD")


@pytest.mark.parametrize("commit", ["--output=VICTIM", "-p", "HEAD", "HEAD~1", "abc",
                                    "g" * 40, "a" * 65, "", "a" * 40 + "\n"])
def test_only_hex_object_ids_are_commits(commit: str) -> None:
    assert not is_commit_id(commit.replace("VICTIM", "x"))


def test_a_git_commit_posing_as_an_option_never_reaches_git(repo, tmp_path: Path) -> None:
    """``"git_commit": "--output=FILE"`` in run.json used to truncate FILE through
    ``git diff`` and the certificate was issued anyway."""
    root, head = repo
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    with pytest.raises(EvidenceError, match="not a git commit id"):
        check_commit("r1", f"--output={victim}", head, ["harness"])
    with pytest.raises(EvidenceError, match="not a git commit id"):
        changed_between(f"--output={victim}", head, ["harness"], root)
    with pytest.raises(EvidenceError, match="not a git commit id"):
        changed_between(head, "--no-index", ["harness"], root)
    assert victim.read_text() == "keep me\n"
    assert changed_between(head[:12], head, ["harness"], root) == []


def test_a_marker_expression_posing_as_an_option_is_refused() -> None:
    data = {"name": "x", "version": "1", "kind": "framework", "title_zh": "x",
            "title_en": "x", "scopes": {"full": {"title_zh": "x", "title_en": "x"},
                                        "sub": {"title_zh": "s", "title_en": "s",
                                                "markexpr": "--basetemp=/etc"}},
            "criteria": [{"id": "c", "title_zh": "c", "title_en": "c", "suite": "operators",
                          "thresholds": {"full": 1.0, "limited": 0.5}}]}
    with pytest.raises(ProfileError, match="not starting with '-'"):
        Profile.from_dict(data)
