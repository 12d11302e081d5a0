"""Progress bars for long jobs, fed by the engine's job events: a ``tqdm.auto`` bar (a
terminal bar, or a widget in notebooks) when output is interactive, nothing otherwise."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

Reporter = Callable[[int, int], None]

#: Seconds a job runs before its bar appears: short queries stay quiet.
DELAY = 0.5


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    ip = shell.get_ipython()
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def interactive() -> bool:
    """Whether a person is watching: a terminal on stderr, or a notebook."""
    return _in_notebook() or (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())


class Bar:
    """Shows task counts on a ``tqdm.auto`` bar, one bar per job."""

    def __init__(self) -> None:
        from tqdm.auto import tqdm

        self._tqdm = tqdm
        self._bar: Any = None
        self._total = -1
        self._done = 0

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None or total != self._total or done < self._done:
            self.close()
            # Reports come at most every 50 ms already: draw each one.
            self._bar = self._tqdm(
                total=total, unit="task", delay=DELAY, mininterval=0, leave=False
            )
            self._total, self._done = total, 0
        self._bar.update(done - self._done)
        self._done = done
        if done >= total:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def reporter(progress: bool | Reporter | None) -> Reporter | None:
    """The progress reporter a session's ``progress=`` asks for: a callable as given,
    ``True`` a bar, ``False`` none, ``None`` a bar when someone watches and tqdm is
    installed."""
    if callable(progress):
        return progress
    if progress is False or (progress is None and not interactive()):
        return None
    try:
        return Bar()
    except ImportError:
        return None
