"""The README's install lines are the ones CI and the quick start run (``examples/install.sh``)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]


def _pip_lines(text: str) -> list[str]:
    lines = [re.sub(r"\s+#.*$", "", line).replace("$QUIET ", "").strip() for line in text.splitlines()]
    return [re.sub(r"\s+", " ", line) for line in lines if line.startswith("pip install")]


def test_readme_install_section_is_the_install_script():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Install") :]
    block = section[section.index("```bash") : section.index("```", section.index("```bash") + 3)]
    assert _pip_lines(block) == _pip_lines((ROOT / "examples" / "install.sh").read_text())


def test_ci_and_quickstart_install_with_the_script():
    assert "bash examples/install.sh" in (ROOT / ".ci" / "run").read_text()
    quickstart = (ROOT / "examples" / "quickstart.sh").read_text()
    assert "bash examples/install.sh" in quickstart
    assert "anomalib-fewshot demo" in quickstart
