"""Progress for long steps: a heartbeat line every 15 s while a conversion runs."""

from __future__ import annotations

import threading
import time
from typing import Callable

Progress = Callable[[str], None]
HEARTBEAT_S = 15.0


class Heartbeat:
    """Calls `say(msg (N s))` every `interval` seconds while a long step runs."""

    def __init__(self, say: Progress, msg: str, interval: float = HEARTBEAT_S):
        self.say, self.msg, self.interval = say, msg, interval
        self._stop = threading.Event()
        self._t0 = 0.0

    def __enter__(self):
        self._t0 = time.perf_counter()
        self.say(self.msg)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(self.interval):
            self.say(f"{self.msg.rstrip('…')} ({time.perf_counter() - self._t0:.0f} s)…")

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        return False


def short(exc: BaseException, limit: int = 300) -> str:
    """An exception's text on one line, cut at `limit` characters."""
    s = " ".join(str(exc).split())
    return s if len(s) <= limit else s[:limit] + "…"
