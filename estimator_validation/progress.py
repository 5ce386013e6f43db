"""Progress of a validation run: a bar on a terminal, one line per unit of work when stderr is piped or
redirected (a bar there is invisible until the end)."""

from __future__ import annotations

import sys
import time
from typing import Any

from tqdm.auto import tqdm


class LineProgress:
    """tqdm's ``update`` and ``set_postfix_str``, printed as one line per update on stderr."""

    def __init__(self, total: int, desc: str, unit: str) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.done, self.postfix, self.start = 0, "", time.perf_counter()

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def update(self, count: int = 1) -> None:
        self.done += count
        what = f" ({self.postfix})" if self.postfix else ""
        print(
            f"{self.desc}: {self.done}/{self.total} {self.unit}{what} done, {time.perf_counter() - self.start:.1f} s",
            file=sys.stderr,
            flush=True,
        )

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


def report_progress(total: int, desc: str, unit: str) -> tqdm | LineProgress:
    """A tqdm bar when stderr is a terminal, else a :class:`LineProgress`; use as a context manager."""
    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit=unit, leave=False)
    return LineProgress(total, desc, unit)
