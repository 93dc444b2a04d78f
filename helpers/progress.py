"""Progress bars that leave one summary line behind.

In Jupyter a bar is shown while the work runs and is then *replaced* by one line
("rounds: 300 in 7.5 s"), so a saved notebook never shows a bar frozen at 0 % in a
static viewer. Elsewhere (scripts, benchmarks, tests) a plain tqdm bar goes to stderr
and disappears when done.
"""

from __future__ import annotations

import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with the course
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def summary_line(desc: str, count: int, seconds: float) -> str:
    """The line left behind, e.g. ``"rounds: 300 in 7.5 s"``."""
    return f"{desc}: {count:,} in {seconds:.1f} s" if seconds < 60 else f"{desc}: {count:,} in {seconds / 60:.1f} min"


def progress(iterable: Iterable[T], desc: str, total: int | None = None, enabled: bool = True) -> Iterator[T]:
    """Yield the items of ``iterable`` under a progress bar named ``desc``.

    Args:
        iterable: the work items.
        desc: what is counted ("rounds", "clients", "target runs").
        total: number of items when ``len(iterable)`` is not defined.
        enabled: False runs silently (no bar, no line).
    """
    if not enabled:
        yield from iterable
        return
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    start = time.perf_counter()
    count = 0
    if _in_notebook():
        from IPython.display import display
        from tqdm.notebook import tqdm as notebook_tqdm

        bar = notebook_tqdm(total=total, desc=desc, display=False, leave=False)
        handle = display(bar.container, display_id=True)
        try:
            for item in iterable:
                yield item
                count += 1
                bar.update(1)
        finally:
            bar.close()
            handle.update(_Line(summary_line(desc, count, time.perf_counter() - start)))
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, leave=False) as bar:
        for item in iterable:
            yield item
            bar.update(1)


class _Line:
    """A plain text line as a display object (what replaces the bar)."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text
