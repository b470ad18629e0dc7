"""``anomalib-fewshot --help``: our verbs first, then anomalib's, from static lists that match the real ones."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from anomalib_fewshot import cli

BIN = Path(sys.executable).parent


def test_our_verbs_are_every_dispatched_verb_and_every_registered_prerequisite():
    from anomalib_fewshot.models import REGISTRY

    steps = {step.verb: step.summary for spec in REGISTRY.values() for step in spec.prerequisites}
    assert set(cli.OWN_VERB_HELP) == set(cli.OWN_VERBS) | set(steps)
    assert {verb: cli.OWN_VERB_HELP[verb] for verb in steps} == steps
    assert cli.MODEL_NAMES == ", ".join(REGISTRY)


def test_help_lists_our_verbs_first_then_anomalibs():
    text = cli.help_text()
    ours = [text.index(f"\n  {verb} ") for verb in cli.OWN_VERB_HELP]
    theirs = [text.index(f"\n  {verb} ") for verb in cli.ANOMALIB_VERB_HELP]
    assert max(ours) < min(theirs)
    for verb in cli.SHADOWED_ANOMALIB_VERBS:
        assert f"anomalib {verb}" in text


@pytest.mark.parametrize("argv", [["--help"], ["-h"], []])
def test_help_imports_nothing_heavy_and_prints_no_warning(argv: list[str]):
    code = (
        "import sys; from anomalib_fewshot.cli import main; status = main(sys.argv[1:]); "
        "heavy = sorted({'torch', 'anomalib', 'lightning'} & set(sys.modules)); assert not heavy, heavy; "
        "sys.exit(status)"
    )
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith("usage: anomalib-fewshot")


def test_installed_script_prints_the_help():
    result = subprocess.run([str(BIN / "anomalib-fewshot"), "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout == cli.help_text() + "\n"


def test_anomalib_verbs_match_anomalibs_parser():
    from anomalib.cli.cli import AnomalibCLI

    parser = AnomalibCLI.__new__(AnomalibCLI)  # the parser only: AnomalibCLI() would parse and run
    parser.parser = parser.init_parser()
    parser.subcommand_parsers, parser.subcommand_method_arguments = {}, {}
    parser.add_subcommands()
    assert set(parser.subcommand_parsers) == set(cli.ANOMALIB_VERB_HELP) | set(cli.SHADOWED_ANOMALIB_VERBS)
