"""Imports flow one way (the README's map): scripts -> utils -> mi_estimators, never back up, and no
module imports itself through others, inside a package included.

The imports of every module are read with ``ast`` (function-level and ``TYPE_CHECKING`` ones included),
without importing it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("mi_mnist_dropout", "mi_cifar_dropout")
FORBIDDEN = {
    # package or script: the top-level names of the house it must not import
    "mi_estimators": {"utils", "estimator_validation", "benchmarks", *SCRIPTS},
    "utils": {"estimator_validation", "benchmarks", *SCRIPTS},
    "estimator_validation": {"benchmarks", *SCRIPTS},
    "benchmarks": set(SCRIPTS),
    "mi_mnist_dropout": {"mi_cifar_dropout", "estimator_validation", "benchmarks"},
    "mi_cifar_dropout": {"mi_mnist_dropout", "estimator_validation", "benchmarks"},
}


def imported_names(path: Path) -> set[str]:
    """The top-level names of every absolute import in ``path``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def modules(part: str) -> list[Path]:
    folder = ROOT / part
    return sorted(folder.rglob("*.py")) if folder.is_dir() else [ROOT / f"{part}.py"]


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_no_import_runs_back_up(part):
    wrong = {str(path.relative_to(ROOT)): sorted(imported_names(path) & FORBIDDEN[part]) for path in modules(part)}
    assert not {path: names for path, names in wrong.items() if names}


def test_the_walk_sees_every_kind_of_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "import utils.cli\nfrom mi_mnist_dropout import x\ndef f():\n    from benchmarks import y\nfrom . import z\n"
    )
    assert imported_names(module) == {"utils", "mi_mnist_dropout", "benchmarks"}


HOUSE = ("mi_estimators", "utils", "estimator_validation", "benchmarks", *SCRIPTS)


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def house_modules(root: Path = ROOT, parts: tuple[str, ...] = HOUSE) -> dict[str, Path]:
    found = {}
    for part in parts:
        folder = root / part
        paths = sorted(folder.rglob("*.py")) if folder.is_dir() else [root / f"{part}.py"]
        found.update({module_name(path, root): path for path in paths if path.exists()})
    return found


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The house's modules that ``name`` imports: ``from a.b import c`` is the module a.b.c where it is
    one, else a.b; relative imports resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parents = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parents, *([node.module] if node.module else [])])
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target:
                found.add(target)
    return found - {name}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_no_import_circle_anywhere():
    found = house_modules()
    assert {"mi_estimators.mixture.api", "utils.analysis.estimation", "mi_mnist_dropout"} <= set(found)
    graph = {name: imported_modules(name, path, set(found)) for name, path in found.items()}
    assert import_cycles(graph) == []


def test_a_circle_inside_a_package_is_found(tmp_path):
    package = tmp_path / "utils" / "inner"
    package.mkdir(parents=True)
    (tmp_path / "utils" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from utils.inner.b import x\n"
    )
    (package / "b.py").write_text("from . import a\n")
    (package / "c.py").write_text("from .a import y\n")
    found = house_modules(tmp_path, ("utils",))
    graph = {name: imported_modules(name, path, set(found)) for name, path in found.items()}
    assert graph["utils.inner.c"] == {"utils.inner.a"}
    assert import_cycles(graph) == [["utils.inner.a", "utils.inner.b"]]
