"""Progress output for long work: a bar on a terminal, periodic lines elsewhere, silent with -q."""
from __future__ import annotations

import logging
import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
log = logging.getLogger("edgeinf")


class Progress:
    """Reports ``done/total`` for a named task on stderr.

    On a terminal it redraws one line; otherwise (logs, CI) it prints a line at most every
    ``interval_s`` seconds. Nothing is printed when the ``edgeinf`` logger is above INFO.

    Example:
        >>> with Progress("train", total=10) as bar:
        ...     for _ in range(10):
        ...         bar.update(1, loss=0.1)
    """

    def __init__(self, desc: str, total: int | None = None, interval_s: float = 2.0):
        self.desc, self.total, self.interval_s = desc, total, interval_s
        self.done = 0
        self._t0 = self._last = time.perf_counter()
        self._tty = sys.stderr.isatty()
        self._on = log.isEnabledFor(logging.INFO)

    def update(self, n: int = 1, **info: float | str) -> None:
        self.done += n
        now = time.perf_counter()
        finished = self.total is not None and self.done >= self.total
        if self._on and (self._tty or now - self._last >= self.interval_s or finished):
            self._last = now
            self._emit(info, end="\r" if self._tty and not finished else "\n")

    def eta_s(self) -> float | None:
        """Seconds left at the average rate so far; None without a total, before the first step or when done."""
        if self.total is None or self.done <= 0 or self.done >= self.total:
            return None
        return (time.perf_counter() - self._t0) / self.done * (self.total - self.done)

    def _emit(self, info: dict, end: str) -> None:
        total = f"/{self.total}" if self.total is not None else ""
        extra = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())
        elapsed = time.perf_counter() - self._t0
        eta = f" eta {self.eta_s():.0f}s" if self.eta_s() is not None else ""
        sys.stderr.write(f"{self.desc} [{self.done}{total}] {elapsed:.1f}s{eta} {extra}".rstrip() + end)
        sys.stderr.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        if self._on and self._tty and (self.total is None or self.done < self.total):
            sys.stderr.write("\n")


def track(items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """Iterate over ``items`` with a :class:`Progress` line."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(desc, total) as bar:
        for item in items:
            yield item
            bar.update(1)
