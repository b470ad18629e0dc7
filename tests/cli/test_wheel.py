"""The wheel holds the product: no lab tool, no research grid, no repository path as a default in code."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: The lab's tools and grids (research/ in the repository): none of them may ship.
LAB_TOOLS = sorted(p.stem for p in (ROOT / "research").glob("*.py") if p.stem != "__init__")
LAB_GRIDS = sorted(p.name for p in (ROOT / "research" / "grids").glob("*.yaml"))
#: What the runner's documented options and the user verbs need (must ship).
PRODUCT_MODULES = ("runner", "grid", "job", "store", "report", "plots", "retime", "supersede", "int8", "timing", "dev",
                   "recommend", "cost", "machine", "ray_executor", "lifeline", "parts")  # fmt: skip
#: Folders of the repository that are not installed: a default in shipped code may not point into them.
REPOSITORY_FOLDERS = ("docs/", "research/", "tests/", "examples/", "../shared")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", out]
    subprocess.run(command, check=True, capture_output=True)
    (path,) = out.glob("anomalib_fewshot-*.whl")
    return zipfile.ZipFile(path)


def _non_docstring_strings(source: str) -> list[str]:
    """String constants of a module that are not docstrings."""
    tree = ast.parse(source)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_lab_lists_are_not_empty():
    assert "target" in LAB_TOOLS and "fusion" in LAB_TOOLS
    assert "ed_dev.yaml" in LAB_GRIDS


def test_the_wheel_holds_the_product_and_no_lab_module(wheel: zipfile.ZipFile):
    names = wheel.namelist()
    modules = {Path(n).stem for n in names if n.startswith("anomalib_fewshot/benchmark/") and n.endswith(".py")}
    assert set(PRODUCT_MODULES) <= modules
    assert not set(LAB_TOOLS) & modules, "lab tools ship in the wheel"
    assert not [n for n in names if n.startswith("research/") or "/research/" in n]
    grids = {Path(n).name for n in names if n.startswith("anomalib_fewshot/configs/benchmark/")}
    assert grids == {p.name for p in (ROOT / "configs" / "benchmark").glob("*.yaml")}
    assert not grids & set(LAB_GRIDS)
    models = {Path(n).name for n in names if n.startswith("anomalib_fewshot/configs/model/")}
    assert models == {p.name for p in (ROOT / "configs" / "model").glob("*.yaml")}
    assert "anomalib_fewshot_autoload.pth" in names
    assert not [n for n in names if n.startswith(("docs/", "tests/")) or n.endswith((".png", ".pt", ".csv"))]


def test_no_shipped_code_defaults_to_a_repository_path(wheel: zipfile.ZipFile):
    offenders = []
    for name in wheel.namelist():
        if name.endswith(".py"):
            for value in _non_docstring_strings(wheel.read(name).decode()):
                if value.startswith(REPOSITORY_FOLDERS):
                    offenders.append(f"{name}: {value!r}")
    assert not offenders
