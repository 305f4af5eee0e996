"""Learning off the call path: the latency model's update and the run statistics of each call
are queued by ``Runtime.infer`` and applied while the caller is not inside ``infer``.

After a real inference the caches are cold, and the Kalman step, the margin update and the
statistics cost 30-150 us on the calling thread. A call only appends one tuple to a queue
(:meth:`Learner.submit`). Who applies it:

- a **host** thread that wakes anyway (the contention monitor, ``Monitor.add_listener``) calls
  :meth:`Learner.tick` after each sample: camera-paced calls are learnt in the gap between
  frames, so nothing competes with the next inference, and a call wakes no thread;
- when the next call starts before the host got to it (calls back to back, or no host), the
  call hands it to the learner's own thread (:meth:`Learner.kick`, one C-level queue put right
  before the backend releases the GIL), which applies it while that call's backend runs; a call
  whose branch is predicted too short to hide that work (``runtime._HANDOFF_MIN_MS``) applies
  it itself after its run (:meth:`Learner.apply_pending`) instead of waking the thread.

Either way a choice uses a model at most one call stale; :meth:`Learner.sync` makes sure of it
when both have fallen further behind. Items are applied in order, one applier at a time.
A check a call needs answered by the end of its run (the input's NaN check, :meth:`check_later`)
is run by the host's tick when one comes during the run, else by the thread when it was woken
anyway (or there is no host), else by the caller after the run. The hand-over is two attribute
writes and a read, no lock: ``to_check`` holds ``(token, fn, arg)`` until a runner takes it and
``checked`` the ``(token, passed)`` of the last check run; a caller that finds no answer for its
own token runs the check itself (a runner that took it late only repeats the work), and tokens
never repeat, so no answer is taken for another call's.
``inline=True`` applies every call at once (deterministic; for tests).
"""
from __future__ import annotations

import collections
import inspect
import queue
import threading
import weakref
from typing import Callable


class Learner:
    """Applies ``apply(*item)`` to submitted items in order, from a host's ticks, its own daemon
    thread, or inline."""

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
        self.kicks = 0  # wake-ups of the thread (a hosted, frame-paced runtime needs almost none)
        self.checks = 0  # checks handed over; also the token of the last one (never repeats)
        self.to_check: tuple | None = None  # (token, fn, arg): a check waiting for a runner
        self.checked: tuple | None = None  # (token, passed) of the last check a runner finished
        self._pending: collections.deque = collections.deque()  # submitted, not applied yet
        self._applying = threading.Lock()  # one applier at a time: items stay in order
        self._queue: queue.SimpleQueue = queue.SimpleQueue()  # wake-ups: True (check, apply), None (stop)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.threaded = False  # a thread runs: submit queues, check_later hands checks to it
        self.hosted = False  # a host calls tick() (set by whoever registers it)

    def start(self) -> "Learner":
        if not self.inline and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="edgeinf-learner", daemon=True)
            self._thread.start()
            self.threaded = True
        return self

    def submit(self, *item) -> None:
        """Keep one call's data (applied at once when inline or when no thread runs)."""
        self.submitted += 1
        self._pending.append(item)
        if not self.threaded:
            self.apply_pending()

    def check_later(self, fn: Callable[[object], bool], arg) -> int | None:
        """Hand ``fn(arg)`` over to run while the backend runs (a host's tick, or the thread after
        the next :meth:`kick`); returns its token for :meth:`passed`, or ``None`` when no thread
        runs (the caller checks at once). ``Runtime.infer`` inlines this."""
        if not self.threaded or self._error is not None:
            return None
        token = self.checks = self.checks + 1
        self.to_check = (token, fn, arg)
        return token

    def passed(self, token: int) -> bool | None:
        """The answer of the check handed over as ``token``: True / False, or ``None`` when no
        runner has finished it (the caller then runs it itself). Withdraws it from the runners."""
        self.to_check = None
        done = self.checked
        return done[1] if done is not None and done[0] == token else None

    def run_check(self) -> None:
        """Run the check waiting for a runner, if any (never raises: a check that fails to run
        does not pass, and the caller checks again itself)."""
        item = self.to_check
        if item is None:
            return
        self.to_check = None
        token, fn, arg = item
        try:
            ok = bool(fn(arg))
        except Exception:
            ok = False
        self.checked = (token, ok)

    def kick(self) -> None:
        """Wake the thread (one C-level queue put; call it right before a GIL-releasing backend
        run) when items are pending, or when a check waits and no host ticks. Nothing to do:
        no wake-up."""
        if self._pending or (self.to_check is not None and not self.hosted):
            self.kicks += 1
            self._queue.put(True)

    def tick(self) -> None:
        """From a host thread that woke anyway: run the armed check, apply what is pending (never
        blocks: when another applier is busy it leaves the items to it). A failure is kept for
        the next :meth:`check`."""
        if self.to_check is not None:
            self.run_check()
        if not self._pending or self._error is not None or not self._applying.acquire(blocking=False):
            return
        try:
            self._apply_held()
        except BaseException as exc:  # surfaced by the next drain/check; never silent
            self._error = exc
        finally:
            self._applying.release()

    def sync(self, max_lag: int = 1) -> None:
        """Make sure at most ``max_lag`` submitted calls are not applied yet."""
        if self.submitted - self.applied > max_lag:
            self.drain()

    def drain(self, timeout_s: float = 5.0) -> None:
        """Apply everything submitted so far, in order (here, or waiting for the applier that has
        it); re-raises a failure of the thread, of a host's tick or of an item applied here."""
        if not self._applying.acquire(timeout=timeout_s):
            raise RuntimeError(f"the runtime's learner did not catch up within {timeout_s:g} s")
        try:
            self._apply_held()
        except BaseException as exc:
            self._error = exc
        finally:
            self._applying.release()
        self.check()

    def apply_pending(self) -> None:
        """Apply every pending item now, in order, on the calling thread."""
        with self._applying:
            self._apply_held()

    def _apply_held(self) -> None:
        pending, apply = self._pending, self._ref()
        while pending:
            item = pending.popleft()
            try:
                if apply is not None:
                    apply(*item)
            finally:
                self.applied += 1

    def _queue_stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)

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
            try:
                self.run_check()  # the caller waits for it: first
                self.apply_pending()
            except BaseException as exc:  # surfaced by the next drain/check; never silent
                self._error = exc

    def stop(self, timeout_s: float = 2.0) -> None:
        """Apply what is submitted, then stop the thread."""
        thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout_s)
            self._thread = None
            self.threaded = False
        self.drain()
