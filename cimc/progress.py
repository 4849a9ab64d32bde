"""Progress bars for long compiles, runs and evaluations: on a terminal, and only for work that
lasts more than a couple of seconds; silent otherwise (a pipe, a log file, the tests).
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, TextIO

# A callback for long steps inside a library call (cimc.load, a chip's first run at a time):
# (what is being done, how many of its parts are done, of how many).
ProgressFn = Callable[[str, int, int], None]

DELAY_S = 2.0  # work shorter than this shows no bar at all
TICK_S = 0.5  # how often a bar redraws during a long step (its clock keeps moving)


class _Silent:
    def update(self, n: int = 1) -> None: ...

    def set_postfix_str(self, s: str) -> None: ...

    def close(self) -> None: ...


def progress_bar(
    total: int,
    desc: str,
    enabled: bool | None = None,
    *,
    delay: float = DELAY_S,
    file: TextIO | None = None,
) -> Any:
    """A tqdm bar on ``file`` (stderr) when it is a terminal (or ``enabled=True``), drawn once the
    work has lasted ``delay`` seconds; else a silent stand-in with the same methods."""
    file = file if file is not None else sys.stderr
    if enabled is None:
        enabled = file.isatty()
    if not enabled:
        return _Silent()
    # miniters=0: every update may redraw (the ticker's update(0) included), at most every TICK_S
    return _bar_class()(total=total, desc=desc, leave=False, file=file, unit="step", delay=delay,
                        miniters=0, mininterval=TICK_S)


@functools.cache
def _bar_class() -> type:
    from tqdm import tqdm

    class Bar(tqdm):
        """tqdm whose postfix waits for the next redraw: tqdm's own draws at once, which would
        show the bar before its delay."""

        def set_postfix_str(self, s: str = "", refresh: bool = False) -> None:
            super().set_postfix_str(s, refresh=refresh)

    return Bar


@contextlib.contextmanager
def progress(
    total: int,
    desc: str,
    enabled: bool | None = None,
    *,
    delay: float = DELAY_S,
    file: TextIO | None = None,
) -> Iterator[Any]:
    """A :func:`progress_bar` for a ``with`` block, redrawn every TICK_S by a thread so its
    elapsed time moves during a long step (a run that reports no progress of its own); closed
    (and erased) at the end of the block."""
    bar = progress_bar(total, desc, enabled, delay=delay, file=file)
    if isinstance(bar, _Silent):
        yield bar
        return
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(TICK_S):
            bar.update(0)

    ticker = threading.Thread(target=tick, name="cimc-progress", daemon=True)
    ticker.start()
    try:
        yield bar
    finally:
        stop.set()
        ticker.join()
        bar.close()


def postfix(bar: Any, prefix: str) -> ProgressFn:
    """A :data:`ProgressFn` that shows ``prefix: what done/total`` as ``bar``'s postfix."""
    def show(what: str, done: int, total: int) -> None:
        bar.set_postfix_str(f"{prefix}: {what} {done}/{total}")

    return show
