"""Contention monitor: a background thread samples the device so ``infer`` reads a cached snapshot.

Reading contention is not free (one psutil call costs 28-71 us on a 2-core host), so the
monitor samples at ``rate_hz`` in its own thread and ``Monitor.snapshot`` is one attribute
read. CPU utilisations are averaged over the last ``window_s`` seconds of samples. Listeners
(``add_listener``) run in the same thread after each sample: the runtime learns there, between
calls.
"""
from __future__ import annotations

import collections
import os
import threading
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable, Mapping

from edgeinf.errors import EdgeinfError
from edgeinf.runtime._readers import Counters, ProcfsReader, PsutilReader

# what the latency model regresses on; the 1-minute load average is too slow for per-call
# prediction (and nearly constant, so it only makes the regression ill-conditioned)
FEATURE_NAMES = ("other_cpu", "runnable_per_core", "gpu_load")


@dataclass(frozen=True)
class Snapshot:
    """Contention at ``t_s`` (monotonic seconds). Fractions are of all cores (0..1).

    ``other_cpu``: CPU busy with everything but this process; ``runnable_per_core``: other
    runnable threads per core (``procs_running`` minus the sampler itself, averaged over the
    window); ``load_per_core``: 1-minute load average / cores; ``gpu_load``: the GPU's busy
    fraction (0..1, ``gpu_load_pct / 100`` of :mod:`edgeinf.boards.sysfs`). ``None``: not readable here.
    """

    t_s: float = 0.0
    other_cpu: float = 0.0
    own_cpu: float = 0.0
    per_core: tuple[float, ...] = ()
    runnable_per_core: float = 0.0
    load_per_core: float = 0.0
    mem_available_mb: float = float("nan")
    cpu_freq_mhz: float | None = None
    gpu_load: float | None = None
    gpu_freq_mhz: float | None = None

    def features(self) -> tuple[float, ...]:
        """The contention features the latency model regresses on (see ``FEATURE_NAMES``)."""
        return (self.other_cpu, self.runnable_per_core, self.gpu_load or 0.0)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["per_core"] = list(self.per_core)
        return {k: (None if isinstance(v, float) and v != v else v) for k, v in d.items()}


IDLE = Snapshot()


@dataclass(frozen=True)
class MonitorConfig:
    """Args: rate_hz: samples per second; window_s: averaging window of the utilisations;
    runnable_samples: the run-queue pressure averages only this many latest samples (it is
    exact at each instant, so a short window reacts faster to load changes);
    root: filesystem root for /proc and /sys (tests pass a tmp tree); gpu_paths: the board
    profile's GPU sysfs files (keys ``load``, ``freq``); source: "auto", "procfs" or "psutil"."""

    rate_hz: float = 50.0
    window_s: float = 0.2
    runnable_samples: int = 3
    root: str = "/"
    gpu_paths: Mapping[str, object] | None = None
    source: str = "auto"

    def __post_init__(self):
        if not (0.1 <= self.rate_hz <= 1000.0):
            raise EdgeinfError(f"monitor rate_hz must be in [0.1, 1000], got {self.rate_hz}")
        if self.runnable_samples < 1:
            raise EdgeinfError(f"monitor runnable_samples must be >= 1, got {self.runnable_samples}")
        if self.window_s <= 0:
            raise EdgeinfError(f"monitor window_s must be > 0, got {self.window_s}")
        if self.source not in ("auto", "procfs", "psutil"):
            raise EdgeinfError(f"monitor source must be auto, procfs or psutil, got {self.source!r}")


class Monitor:
    """Samples contention in a daemon thread; ``snapshot`` is the latest :class:`Snapshot`.

    Use as a context manager (``with Monitor() as m:``) or ``start()`` / ``stop()``; ``update()``
    takes one sample synchronously (tests drive it with a fake clock and a fake /proc tree).
    """

    def __init__(self, config: MonitorConfig | None = None, clock: Callable[[], float] = time.monotonic):
        self.config = config or MonitorConfig()
        self.reader = self._make_reader(clock)
        self.snapshot: Snapshot = IDLE
        self.samples = 0
        self.busy_threads = 0  # threads the runtime's own inference keeps running now (not contention)
        self._busy_sources: tuple[Callable[[], int], ...] = ()
        self._history: collections.deque[Counters] = collections.deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._listeners: tuple[Callable[[], None], ...] = ()

    def add_listener(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` in the sampling thread after every sample (e.g. the runtime's learning:
        work done between calls instead of on the call path). ``fn`` must not raise."""
        self._listeners = (*self._listeners, fn)

    def remove_listener(self, fn: Callable[[], None]) -> None:
        self._listeners = tuple(f for f in self._listeners if f is not fn)

    def add_busy_source(self, fn: Callable[[], int]) -> None:
        """``fn()``: how many threads a runtime's inference runs on right now (0 between calls);
        asked at each sample, so the runtime's own threads are not counted as contention and its
        calls write nothing here. ``fn`` must not raise."""
        self._busy_sources = (*self._busy_sources, fn)

    def remove_busy_source(self, fn: Callable[[], int]) -> None:
        self._busy_sources = tuple(f for f in self._busy_sources if f is not fn)

    def _make_reader(self, clock):
        cfg = self.config
        if cfg.source == "procfs" or (cfg.source == "auto" and ProcfsReader.available(cfg.root)):
            if not ProcfsReader.available(cfg.root):
                raise EdgeinfError(f"no {os.path.join(cfg.root, 'proc/stat')}: use source='psutil' on this OS")
            return ProcfsReader(cfg.root, cfg.gpu_paths, clock)
        return PsutilReader(clock)

    # -- sampling ------------------------------------------------------------------------
    def update(self) -> Snapshot:
        """Take one sample now and publish the new snapshot."""
        c = self.reader.read()
        busy = self.busy_threads + sum(f() for f in self._busy_sources)
        if busy and c.procs_running:
            c = replace(c, procs_running=max(1, c.procs_running - busy))
        self._history.append(c)
        while len(self._history) > 2 and c.t_s - self._history[1].t_s >= self.config.window_s:
            self._history.popleft()
        self.snapshot = summarize(self._history, self.config.runnable_samples)
        self.samples += 1
        return self.snapshot

    def _loop(self) -> None:
        period = 1.0 / self.config.rate_hz
        try:
            while not self._stop.is_set():
                self.update()
                for fn in self._listeners:
                    fn()
                self._stop.wait(period)
        except BaseException as exc:  # surfaced by stop() / check(); never silent
            self._error = exc

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> "Monitor":
        if self._thread is None:
            self.update()
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="edgeinf-monitor", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop the sampling thread and wait for it; re-raises an error the thread hit."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise EdgeinfError("the monitor thread did not stop within 2 s")
            self._thread = None
        self.check()

    def check(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise EdgeinfError(f"the contention monitor failed: {err}") from err

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> "Monitor":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def summarize(history: "collections.deque[Counters] | list[Counters]", runnable_samples: int = 3) -> Snapshot:
    """A snapshot from the counters in the window (first vs last for the CPU times; the run
    queue over the last ``runnable_samples``)."""
    first, last = history[0], history[-1]
    n = len(last.core_total_s)
    d_total = [b - a for a, b in zip(first.core_total_s, last.core_total_s)]
    d_busy = [b - a for a, b in zip(first.core_busy_s, last.core_busy_s)]
    per_core = tuple(_frac(b, t) for b, t in zip(d_busy, d_total))
    all_total = sum(d_total)
    busy = _frac(sum(d_busy), all_total)
    own = _frac(last.own_cpu_s - first.own_cpu_s, all_total)
    recent = list(history)[-runnable_samples:]
    runnable = sum(max(0, c.procs_running - 1) for c in recent) / len(recent)
    return Snapshot(
        t_s=last.t_s, other_cpu=max(0.0, busy - own), own_cpu=own, per_core=per_core,
        runnable_per_core=runnable / max(n, 1), load_per_core=last.loadavg1 / max(n, 1),
        mem_available_mb=last.mem_available_mb, cpu_freq_mhz=last.cpu_freq_mhz,
        gpu_load=None if last.gpu_load_pct is None else last.gpu_load_pct / 100.0, gpu_freq_mhz=last.gpu_freq_mhz)


def _frac(part: float, whole: float) -> float:
    return min(1.0, max(0.0, part / whole)) if whole > 0 else 0.0
