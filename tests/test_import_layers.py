"""Imports flow one way (README, "Architecture"): scripts -> utils -> mi_estimators, never back up.

The imports of every module are read with ``ast`` (function-level ones included), without importing it.
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
