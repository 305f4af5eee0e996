"""Learning off the call path: the latency model's update and the run statistics of each call
are queued by ``Runtime.infer`` and applied by a background thread while the next call runs.

After a real inference the caches are cold, and the Kalman step, the margin update and the
statistics cost 30-150 us on the calling thread. Here ``infer`` keeps one tuple per call and,
right before the next call enters the backend (which releases the GIL), hands it to the
learner thread (:meth:`Learner.kick`, one C-level queue put), so learning overlaps the
inference instead of following it, and the thread never holds the GIL while the caller runs
Python. The choice of a call therefore uses a model at most one call stale;
:meth:`Learner.sync` makes sure of it when the thread has fallen further behind.
``inline=True`` applies every call at once (deterministic; for tests).
"""
from __future__ import annotations

import _thread
import inspect
import queue
import weakref
import threading
from typing import Callable


class Check:
    """A check the learner thread runs while the backend runs: ``passed()`` waits for its result."""

    __slots__ = ("fn", "arg", "ok", "_done")

    def __init__(self, fn: Callable[[object], bool], arg):
        self.fn, self.arg, self.ok = fn, arg, True
        self._done = _thread.allocate_lock()
        self._done.acquire()

    def run(self) -> None:
        try:
            self.ok = bool(self.fn(self.arg))
        finally:
            self.arg = None
            self._done.release()

    def passed(self, timeout_s: float = 5.0) -> bool:
        if not self._done.acquire(timeout=timeout_s):
            raise RuntimeError(f"the runtime's learner thread did not run a check within {timeout_s:g} s")
        return self.ok


class Learner:
    """Applies ``apply(*item)`` to submitted items in order, in a daemon thread (or inline)."""

    def __init__(self, apply: Callable[..., None], inline: bool = False):
        # a bound method is held weakly: the thread must not keep an unclosed runtime alive, and
        # when the runtime is collected its learner thread stops
        if inspect.ismethod(apply):
            self._ref = weakref.WeakMethod(apply)
            weakref.finalize(apply.__self__, self._queue_stop)
        else:
            self._ref = lambda: apply
        self.inline = inline
        self.submitted = 0
        self.applied = 0
        self._held: list = []  # submitted, not handed to the thread yet
        self._check: Check | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> "Learner":
        if not self.inline and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="edgeinf-learner", daemon=True)
            self._thread.start()
        return self

    def submit(self, *item) -> None:
        """Keep one call's data (applied at once when inline or when no thread runs)."""
        self.submitted += 1
        if self._thread is None:
            self._apply(item)
        else:
            self._held.append(item)

    def check_later(self, fn: Callable[[object], bool], arg) -> "Check | None":
        """``fn(arg)`` run by the thread after the next :meth:`kick`; ``None`` when no thread
        runs (the caller checks at once)."""
        if self._thread is None or self._error is not None:
            return None
        check = self._check = Check(fn, arg)
        return check

    def kick(self) -> None:
        """Hand the pending check and the held items to the thread in one queue put (one wake-up;
        call it right before a GIL-releasing backend run)."""
        if self._held or self._check is not None:
            self._queue.put((self._check, self._held))
            self._held, self._check = [], None

    def sync(self, max_lag: int = 1) -> None:
        """Make sure at most ``max_lag`` submitted calls are not applied yet."""
        if self.submitted - self.applied > max_lag:
            self.drain()

    def drain(self, timeout_s: float = 5.0) -> None:
        """Apply everything submitted so far, in order; re-raises a failure of the thread."""
        self.kick()
        thread = self._thread
        if thread is not None and thread.is_alive():
            done = threading.Event()
            self._queue.put(done)
            if not done.wait(timeout_s):
                raise RuntimeError(f"the runtime's learner thread did not catch up within {timeout_s:g} s")
        else:  # no thread (stopped, or it failed): apply here
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, tuple):
                    self._run(item)
        self.check()

    def _run(self, work: tuple) -> None:
        """One kick's work: the check first (the caller waits for it), then the items in order."""
        check, items = work
        if check is not None:
            check.run()
        for item in items:
            self._apply(item)

    def _queue_stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)

    def _apply(self, item: tuple) -> None:
        apply = self._ref()
        if apply is not None:
            apply(*item)
        self.applied += 1

    def check(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise RuntimeError(f"the runtime's learner thread failed: {err}") from err

    def _loop(self) -> None:
        q = self._queue
        while True:
            item = q.get()
            if item is None:
                return
            if not isinstance(item, tuple):
                item.set()  # a drain marker: everything before it is applied
                continue
            try:
                self._run(item)
            except BaseException as exc:  # surfaced by the next drain/check; never silent
                self._error = exc
                return

    def stop(self, timeout_s: float = 2.0) -> None:
        """Apply what is submitted, then stop the thread."""
        thread = self._thread
        if thread is not None:
            self.kick()
            self._queue.put(None)
            thread.join(timeout_s)
            self._thread = None
        self.drain()
