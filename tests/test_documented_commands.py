"""Every command in the README and the docs that calls one of the project's scripts or modules names one
that exists, and uses only flags that its parser accepts (read from its ``--help``; nothing long runs)."""

import importlib.util
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNTRACKED = {".venv", ".git", "runs", "results"}
DOCUMENTS = [
    "README.md",
    *sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("*/**/*.md") if not UNTRACKED & set(p.relative_to(ROOT).parts)),
]
NOT_OURS = {"venv", "pip", "pytest", "jupyter", "nbconvert"}
FENCE = re.compile(r"^```([a-z]*)\n(.*?)^```", re.S | re.M)
SHELL = {"", "bash", "sh", "console", "shell"}
INLINE = re.compile(r"`((?:[A-Z_]+=\S+ )*(?:\.venv/bin/)?python3? [^`]+)`")


def commands(text: str) -> list[str]:
    """The shell commands of a markdown text: fenced shell blocks (continuation lines joined, comments
    and here-documents dropped) and inline code that starts with python."""
    found = []
    for language, block in FENCE.findall(text):
        if language not in SHELL:
            continue
        block = re.sub(r"<<'?(\w+)'?\n.*?\n\1\n", "\n", block.replace("\\\n", " "), flags=re.S)
        found += [line.split(" #")[0] for line in block.splitlines()]
    found += INLINE.findall(text)
    return [part.strip() for line in found for part in re.split(r"&&|\|\||;|\|", line) if part.strip()]


def invocation(command: str) -> tuple[list[str], list[str]] | None:
    """(how to run the script or module, the flags the command gives it), or None when the command
    calls no script or module of this project."""
    try:
        words = shlex.split(command, comments=True)
    except ValueError:
        words = command.split()
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
        words = words[1:]
    if not words or not re.fullmatch(r"(\.venv/bin/)?python3?", words[0]) or len(words) < 2:
        return None
    if words[1] == "-m":
        if words[2] in NOT_OURS:
            return None
        target, rest = ["-m", words[2]], words[3:]
    elif words[1].endswith(".py"):
        target, rest = [words[1]], words[2:]
    else:
        return None
    return target, [w.split("=")[0] for w in rest if w.startswith("--")]


def exists(target: list[str]) -> bool:
    if target[0] == "-m":
        return importlib.util.find_spec(target[1]) is not None
    return (ROOT / target[0]).is_file()


@cache
def accepted_flags(target: tuple[str, ...]) -> frozenset[str]:
    done = subprocess.run([sys.executable, *target, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{' '.join(target)} --help failed: {done.stderr[-2000:]}"
    return frozenset(re.findall(r"--[a-z][a-z0-9-]*", done.stdout))


def problems(text: str) -> list[str]:
    found = []
    for command in commands(text):
        called = invocation(command)
        if called is None:
            continue
        target, flags = called
        if not exists(target):
            found.append(f"{command}: {' '.join(target)} does not exist")
            continue
        unknown = [f for f in flags if f not in accepted_flags(tuple(target))]
        if unknown:
            found.append(f"{command}: {' '.join(target)} accepts no {', '.join(unknown)}")
    return found


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_documented_command_exists_with_its_flags(document):
    text = (ROOT / document).read_text()
    assert problems(text) == []


def test_the_documents_do_call_the_scripts():
    called = {" ".join(c[0]) for d in DOCUMENTS for c in map(invocation, commands((ROOT / d).read_text())) if c}
    assert {"mi_mnist_dropout.py", "-m utils.analysis.information_plane", "estimator_validation/known_MI.py"} <= called


def test_a_flag_that_does_not_exist_is_found():
    text = "```bash\n.venv/bin/python mi_mnist_dropout.py --dataset digits \\\n    --no-such-flag 3\n```\n"
    (found,) = problems(text)
    assert found.endswith("mi_mnist_dropout.py accepts no --no-such-flag")
    (found,) = problems("Run `python -m utils.analysis.nowhere RUN`.")
    assert found.endswith("-m utils.analysis.nowhere does not exist")
