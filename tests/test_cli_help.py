"""``--help`` of every ``shipei`` command and subcommand (those added through the
``shipei.commands`` entry-point group included) exits 0 and prints no traceback."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli.main import build_parser

ROOT = Path(__file__).resolve().parent.parent


def _command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
                   ) -> list[tuple[str, ...]]:
    paths = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in sorted(action.choices.items()):
                paths += _command_paths(sub, (*prefix, name))
    return paths


COMMANDS = _command_paths(build_parser())


def test_every_command_is_found() -> None:
    names = {path[0] for path in COMMANDS if path}
    assert {"run", "targets", "report", "gate", "certify", "cert", "compare", "merge",
            "sim"} <= names
    assert ("cert", "verify") in COMMANDS and ("sim", "board") in COMMANDS


def test_every_help_renders_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    failures = []
    for path in COMMANDS:
        try:
            build_parser().parse_args([*path, "--help"])
        except SystemExit as exit_:
            if exit_.code != 0:
                failures.append((path, f"exit {exit_.code}"))
        except Exception as exc:  # a help string argparse cannot format, e.g. a bare %
            failures.append((path, f"{type(exc).__name__}: {exc}"))
        else:
            failures.append((path, "--help did not exit"))
    out = capsys.readouterr().out
    assert not failures, failures
    assert out.count("usage: shipei") == len(COMMANDS)


def test_help_through_the_installed_command() -> None:
    """The console script itself, for the top level and one entry-point command."""
    for path in [(), ("sim", "board"), ("compare",)]:
        done = subprocess.run([sys.executable, "-m", "harness.cli.main", *path, "--help"],
                              capture_output=True, text=True, cwd=ROOT, timeout=120,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert done.returncode == 0, (path, done.stderr)
        assert "Traceback" not in done.stderr and "usage: shipei" in done.stdout


def test_a_built_in_command_is_parsed_without_importing_the_others() -> None:
    """``shipei run`` builds only its own parser (the certificate and center modules stay
    unimported), and parses its arguments exactly as the whole parser does."""
    from harness.cli.main import parse_arguments

    argv = ["run", "--suite", "operators", "--target", "onnxruntime-cpu", "-k", "abs"]
    assert vars(parse_arguments(argv)) | {"handler": None} == \
        vars(build_parser().parse_args(argv)) | {"handler": None}
    probe = ("import sys; from harness.cli.main import parse_arguments; "
             "parse_arguments(['run', '--suite', 'operators']); "
             "print(sorted(m for m in sys.modules if m.startswith('harness.cli.cmd_')))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    assert done.stdout.strip() == "['harness.cli.cmd_run']"
    assert parse_arguments(["targets"]).command == "targets"
