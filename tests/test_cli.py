"""run_command: the user's mistakes end with one error line and exit 2, bugs with a traceback and exit 1."""

import pytest

from mi_estimators.checks import InputError
from utils.cli import REPORT, CommandError, run_command


def _raise(err):
    def body():
        raise err

    return body


@pytest.mark.parametrize(
    "err, line",
    [
        (InputError("x has 1 samples"), "prog: error: x has 1 samples"),
        (CommandError("argument --n: must be an integer"), "prog: error: argument --n: must be an integer"),
        (PermissionError(13, "Permission denied", "out/x.json"), "prog: error: out/x.json: permission denied"),
        (FileNotFoundError("run folder nowhere does not exist"), "prog: error: run folder nowhere does not exist"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(capsys, err, line):
    assert run_command("prog", _raise(err)) == 2
    assert capsys.readouterr().err == line + "\n"


@pytest.mark.parametrize(
    "err",
    [
        TypeError("bad operand"),
        ValueError("operands could not be broadcast"),
        OSError("no file named"),
        KeyError("mi_xz"),
    ],
)
def test_anything_else_is_a_bug_with_its_traceback(capsys, err):
    assert run_command("prog", _raise(err)) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("Traceback") and type(err).__name__ in lines[-2] and lines[-1] == f"prog: {REPORT}"


def test_exit_codes_of_success_and_interruption(capsys):
    assert run_command("prog", lambda: None) == 0 and run_command("prog", lambda: 3) == 3
    assert run_command("prog", _raise(KeyboardInterrupt()), interrupted="stopped; run it again") == 130
    assert capsys.readouterr().err == "prog: stopped; run it again\n"
