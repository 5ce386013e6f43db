"""What every command line of the project shares: a parser whose errors are one line, argparse types
built from the validators of :mod:`mi_estimators.checks`, and :func:`run_command`, which keeps the
user's mistakes apart from the project's bugs.

A mistake of the user (an :class:`~mi_estimators.checks.InputError` or a :class:`CommandError`, or an
operating-system error about a named file: a missing or unwritable path, a full disk) ends with one
``<prog>: error: ...`` line and exit code 2. Anything else is a bug: its traceback is printed with one
line asking to report it, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import sys
import tempfile
import traceback
from typing import Any, Callable, Iterator, NoReturn

from mi_estimators.checks import InputError, check_float, check_int

BUG_EXIT = 1
"""Exit code of a bug; bad input exits with 2, as argparse does."""
REPORT = "this is a bug, not a problem with your input: please report it with the traceback above"


class CommandError(Exception):
    """A user-facing error of a command: printed as one ``<prog>: error: ...`` line, exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse that raises :class:`CommandError` (one line, no usage dump) instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise CommandError(message)


def _arg_type(convert: Callable[[str], Any], check: Callable[[Any], Any], kind: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {kind}, got {text!r}") from None
        try:
            return check(value)
        except InputError as err:
            raise argparse.ArgumentTypeError(str(err).removeprefix("value ")) from None

    return parse


def int_arg(minimum: int = 1, maximum: int | None = None) -> Callable[[str], int]:
    """argparse ``type=``: an integer in [minimum, maximum] (the flag is named by argparse)."""
    return _arg_type(int, lambda v: check_int(v, "value", minimum=minimum, maximum=maximum), "an integer")


def float_arg(
    minimum: float = -math.inf, *, inclusive: bool = True, maximum: float | None = None
) -> Callable[[str], float]:
    """argparse ``type=``: a finite number above (``inclusive``: at least) ``minimum``."""
    return _arg_type(
        float, lambda v: check_float(v, "value", minimum=minimum, inclusive=inclusive, maximum=maximum), "a number"
    )


def is_user_error(err: BaseException) -> bool:
    """Bad input, or an operating-system error about a file: missing (the messages of the project's own
    FileNotFoundErrors name the path), not readable or writable, or a full disk. Those concern the
    user's files and disk, name the file, and no change to the code would cure them."""
    return isinstance(err, (InputError, CommandError, FileNotFoundError)) or (
        isinstance(err, OSError) and err.filename is not None
    )


def user_message(err: BaseException) -> str:
    """The one-line message of a user error (an OSError names its file and the reason)."""
    if isinstance(err, OSError) and not isinstance(err, (InputError, CommandError)) and err.strerror:
        return f"{err.filename}: {err.strerror.lower()}"
    return str(err)


def run_command(prog: str, body: Callable[[], int | None], *, interrupted: str = "interrupted") -> int:
    """Run ``body`` and return the exit code: its own (None: 0), 2 with one ``<prog>: error:`` line for a
    user error (:func:`is_user_error`), 130 with ``interrupted`` on Ctrl-C, and 1 with the traceback for
    anything else."""
    try:
        return body() or 0
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - every exception is either the user's or a bug; both are reported
        if is_user_error(err):
            print(f"{prog}: error: {user_message(err)}", file=sys.stderr)
            return 2
        traceback.print_exc()
        print(f"{prog}: {REPORT}", file=sys.stderr)
        return BUG_EXIT


@contextlib.contextmanager
def log_to_stderr(prog: str, logger: str = "utils") -> Iterator[None]:
    """Show what the project's modules log (announcements of long work, progress lines) on stderr as
    ``<prog>: <message>`` lines for the ``with`` block, whether or not stderr is a terminal; the Python API
    leaves the routing of its ``logging`` records to the caller."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{prog}: %(message)s"))
    target = logging.getLogger(logger)
    saved = target.level, target.propagate
    target.addHandler(handler)
    target.setLevel(logging.INFO)
    target.propagate = False
    try:
        yield
    finally:
        target.removeHandler(handler)
        target.setLevel(saved[0])
        target.propagate = saved[1]


@contextlib.contextmanager
def native_logs_silenced(verbose: bool) -> Iterator[None]:
    """Keep what the C++ side of TensorFlow and JAX writes to file descriptor 2 while they start (e.g.
    ``failed call to cuInit`` on machines without a GPU, written before TF_CPP_MIN_LOG_LEVEL is read)
    off the terminal; shown if the block fails. Later TensorFlow messages obey TF_CPP_MIN_LOG_LEVEL,
    set to 3 unless the user set it. ``verbose``: change nothing."""
    if verbose:
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
