"""Sessions on demand: a bounded, least-recently-used set of open onnxruntime sessions.

A runner in a pool opens its session on its first call (not at load) and may be closed again
when more than ``max_sessions`` are open; the next call opens it again. ``Runtime.load`` then
costs what the first branch needs, not one session per artifact in the package.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

from edgeinf.errors import EdgeinfError

DEFAULT_MAX_SESSIONS = 256  # open sessions per executor (least recently used are closed first)


class SessionPool:
    """Tracks the open sessions of its runners and closes the least recently used beyond the bound.

    Args:
        max_sessions: sessions kept open at once (>= 1); ``None`` = ``DEFAULT_MAX_SESSIONS``.
    """

    def __init__(self, max_sessions: int | None = None):
        max_sessions = DEFAULT_MAX_SESSIONS if max_sessions is None else max_sessions
        if not isinstance(max_sessions, int) or max_sessions < 1:
            raise EdgeinfError(f"max_sessions must be an integer >= 1, got {max_sessions!r}")
        self.max_sessions = max_sessions
        self._open: OrderedDict[int, object] = OrderedDict()
        self._lock = threading.Lock()
        self.opened = self.closed = 0

    def touch(self, runner) -> None:
        """``runner`` was just used: mark it most recent; close the oldest beyond the bound."""
        key = id(runner)
        with self._lock:
            if key in self._open:
                self._open.move_to_end(key)
                return
            self._open[key] = runner
            self.opened += 1
            while len(self._open) > self.max_sessions:
                _, old = self._open.popitem(last=False)
                old.close_session()
                self.closed += 1

    def forget(self, runner) -> None:
        """``runner`` closed its session itself."""
        with self._lock:
            self._open.pop(id(runner), None)

    def close_all(self) -> None:
        """Close every open session (they open again on their next call)."""
        with self._lock:
            runners = list(self._open.values())
            self._open.clear()
        for r in runners:
            r.close_session()

    def stats(self) -> dict[str, int]:
        """Sessions open now, opened and closed so far."""
        return {"open": len(self._open), "opened": self.opened, "closed": self.closed, "max_sessions": self.max_sessions}
