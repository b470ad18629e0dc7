"""The lines the architecture never crosses (CONTRIBUTING.md, "Architecture"), read from every module's imports.

Imports are read with ``ast`` wherever they stand (module level or inside a function), so a function-local import
cannot hide a circle or a forbidden edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "anomalib_fewshot"


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(path): path for path in PACKAGE.rglob("*.py")}
MODEL_FOLDERS = sorted(p.name for p in (PACKAGE / "models").iterdir() if (p / "__init__.py").is_file())


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute names; ``from X import y`` is ``X.y`` when that is a module)."""
    me = _name(path)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = me.split(".") if path.name == "__init__.py" else me.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return found - {me}


GRAPH = {name: imported(path) for name, path in MODULES.items()}


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _offenders(sources: str, targets: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{module} imports {target}"
        for module, found in GRAPH.items()
        if _within(module, sources)
        for target in found
        if any(_within(target, t) for t in targets)
    )


def test_the_graph_is_read():
    assert "anomalib_fewshot.benchmark.runner" in GRAPH
    assert "anomalib_fewshot.benchmark.grid" in GRAPH["anomalib_fewshot.benchmark.runner"]
    assert len(MODEL_FOLDERS) >= 4


def test_no_import_circles_among_the_packages_modules():
    ours = {name: {t for t in targets if t in MODULES} for name, targets in GRAPH.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(ours[node]):
            if state.get(nxt) == 1:
                circles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for name in sorted(ours):
        if name not in state:
            visit(name, [name])
    assert not circles


def test_the_package_never_imports_research_or_tests():
    assert not _offenders("anomalib_fewshot", ("research", "tests"))


def test_nothing_imports_the_cli_module():
    assert not _offenders("anomalib_fewshot", ("anomalib_fewshot.cli",))


def test_components_know_no_model_benchmark_or_cli():
    targets = ("anomalib_fewshot.models", "anomalib_fewshot.benchmark", "anomalib_fewshot.cli")
    assert not _offenders("anomalib_fewshot.components", targets)


@pytest.mark.parametrize("folder", MODEL_FOLDERS)
def test_a_model_imports_no_other_model(folder: str):
    others = tuple(f"anomalib_fewshot.models.{other}" for other in MODEL_FOLDERS if other != folder)
    assert not _offenders(f"anomalib_fewshot.models.{folder}", others)


@pytest.mark.parametrize("folder", MODEL_FOLDERS)
def test_torch_model_stays_pure_torch(folder: str):
    found = GRAPH[f"anomalib_fewshot.models.{folder}.torch_model"]
    assert not [t for t in found if _within(t, "lightning") or _within(t, "anomalib.engine")]


def test_benchmark_and_cli_reach_models_only_through_the_registry():
    inside = tuple(f"anomalib_fewshot.models.{part}" for part in [*MODEL_FOLDERS, "base"])
    assert not _offenders("anomalib_fewshot.benchmark", inside) + _offenders("anomalib_fewshot.cli", inside)


def test_nn_blocks_are_pure_torch():
    """``components/nn`` is what torch models are built from: it must stay exportable, free of Lightning/anomalib."""
    assert not _offenders(
        "anomalib_fewshot.components.nn", ("lightning", "anomalib", "anomalib_fewshot.components.lifecycle")
    )
