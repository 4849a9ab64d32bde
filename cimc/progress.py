"""Progress bars for long compiles and runs: shown on a terminal, silent otherwise."""

from __future__ import annotations

import sys
from typing import Any


class _Silent:
    def update(self, n: int = 1) -> None: ...

    def set_postfix_str(self, s: str) -> None: ...

    def close(self) -> None: ...


def progress_bar(total: int, desc: str, enabled: bool | None = None, unit: str = "step") -> Any:
    """A tqdm bar on stderr when it is a terminal (or ``enabled=True``); else a silent stand-in."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return _Silent()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False, file=sys.stderr, unit=unit)
