"""The package: the README's NumPy example runs where TensorFlow, Keras, JAX and PyTorch cannot be
imported, a wheel holds the estimators alone (no generic top-level name such as ``utils``), the editable
install sits after site-packages on ``sys.path``, and no module edits ``sys.path``."""

import ast
import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FRAMEWORKS = ("tensorflow", "keras", "jax", "jaxlib", "torch")
BLOCKER = f"""
import sys
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {FRAMEWORKS!r}:
            raise ImportError(f"{{name}} is blocked in this test")
sys.meta_path.insert(0, Blocked())
"""


def readme_example() -> str:
    """The first Python block under the README's heading on the estimators on your own arrays."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Use the estimators on your own arrays") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def _outside_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_the_readme_example_runs_without_any_deep_learning_framework(tmp_path):
    example = readme_example()
    assert len(example.strip().splitlines()) <= 15
    check = f"\nassert not {{m.split('.')[0] for m in sys.modules}} & set({FRAMEWORKS!r})\n"
    done = subprocess.run(
        [sys.executable, "-c", BLOCKER + example + check],
        cwd=tmp_path,
        env=_outside_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    lower, upper = map(float, re.match(r"I\(X;Z\) in \[([\d.]+), ([\d.]+)\] nats", lines[0]).groups())
    assert 0 < lower <= upper
    assert "Monte Carlo" in lines[1] and lines[2].startswith("I(Y;Z) = ")


def test_the_blocker_blocks():
    done = subprocess.run([sys.executable, "-c", BLOCKER + "import keras"], capture_output=True, text=True)
    assert done.returncode != 0 and "blocked in this test" in done.stderr


def test_a_wheel_holds_the_estimators_only(tmp_path):
    pytest.importorskip("hatchling")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("*.whl")
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"mi_estimators"}
    names = zipfile.ZipFile(wheel).namelist()
    assert "mi_estimators/mixture/api.py" in names and any(n.endswith("licenses/LICENSE") for n in names)


def test_the_editable_install_never_shadows_an_installed_package(tmp_path):
    """The repository joins sys.path through a .pth file, after site-packages: another package named
    ``utils`` would win over ours, never the other way round."""
    where = [sys.executable, "-c", "import sys, utils; print(utils.__file__); print('\\n'.join(sys.path))"]
    done = subprocess.run(where, cwd=tmp_path, env=_outside_env(), capture_output=True, text=True, check=True)
    module, *path = done.stdout.splitlines()
    if str(ROOT) not in path:
        pytest.skip("the repository is not installed editable in this environment")
    assert Path(module) == ROOT / "utils" / "__init__.py"
    assert path.index(str(ROOT)) > path.index(sysconfig.get_paths()["purelib"])


def _edits_sys_path(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "path":
            if isinstance(node.value, ast.Name) and node.value.id == "sys":
                return True
    return False


def test_no_module_or_script_edits_sys_path():
    sources = [p for p in ROOT.rglob("*.py") if not {".venv", "tests", ".git"} & set(p.relative_to(ROOT).parts)]
    assert len(sources) > 40
    assert [str(p.relative_to(ROOT)) for p in sources if _edits_sys_path(ast.parse(p.read_text()))] == []
