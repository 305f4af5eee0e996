"""Contention generator: CPU spinner processes following a load trace, and a memory-bandwidth hog.

A trace is a step function of time: (t_s, load) points, load in spinners per core (2.0 =
two busy-looping processes per core), held until the next point, for ``duration_s``.
Fractional loads run the last spinner at a duty cycle. Every child is bounded in time three
ways: its own deadline, an orphan check (it exits when its parent dies) and the parent's
cleanup on exit, error or Ctrl-C (SIGTERM, then SIGKILL).

Example:
    >>> trace = LoadTrace.square(low=0.0, high=2.0, period_s=4.0, duration_s=20.0)
    >>> with ContentionGenerator(trace) as gen:          # doctest: +SKIP
    ...     run_my_workload()
"""
from __future__ import annotations

import argparse
import atexit
import bisect
import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from edgeinf.errors import EdgeinfError

MAX_DURATION_S = 24 * 3600.0
PERIOD_S = 0.01  # duty-cycle period of a fractional spinner


@dataclass(frozen=True)
class LoadTrace:
    """A step function ``load(t)`` over ``[0, duration_s)``; load = spinners per core (>= 0)."""

    times_s: tuple[float, ...]
    loads: tuple[float, ...]
    duration_s: float
    MAX_VALUE: ClassVar[float] = 64.0
    VALUE_KEYS: ClassVar[tuple[str, ...]] = ("load",)

    def __post_init__(self):
        if not self.times_s or len(self.times_s) != len(self.loads):
            raise EdgeinfError("a load trace needs one or more (t, load) points")
        if not all(math.isfinite(t) for t in self.times_s):
            raise EdgeinfError("load trace times must be finite numbers of seconds")
        if any(b < a for a, b in zip(self.times_s, self.times_s[1:])) or self.times_s[0] < 0:
            raise EdgeinfError("load trace times must be >= 0 and non-decreasing")
        if any(not (0.0 <= x <= self.MAX_VALUE) for x in self.loads):
            raise EdgeinfError(f"trace values must be in [0, {self.MAX_VALUE:g}] ({self.VALUE_KEYS[0]})")
        if not (0.0 < self.duration_s <= MAX_DURATION_S):
            raise EdgeinfError(f"a load trace must be bounded: duration_s in (0, {MAX_DURATION_S:.0f}]")

    def load_at(self, t_s: float) -> float:
        """Load at ``t_s`` seconds after the start (0 before the first point and after the end)."""
        if t_s < self.times_s[0] or t_s >= self.duration_s:
            return 0.0
        return self.loads[bisect.bisect_right(self.times_s, t_s) - 1]

    @property
    def peak(self) -> float:
        return max(self.loads)

    @classmethod
    def constant(cls, load: float, duration_s: float) -> "LoadTrace":
        return cls((0.0,), (float(load),), float(duration_s))

    @classmethod
    def square(cls, low: float, high: float, period_s: float, duration_s: float) -> "LoadTrace":
        """``low`` for the first half of each period, ``high`` for the second half."""
        n = max(1, math.ceil(duration_s / (period_s / 2)))
        times = tuple(i * period_s / 2 for i in range(n))
        return cls(times, tuple(high if i % 2 else low for i in range(n)), float(duration_s))

    @classmethod
    def from_points(cls, points, duration_s: float | None = None) -> "LoadTrace":
        pts = sorted((float(t), float(x)) for t, x in points)
        if not pts:
            raise EdgeinfError("a load trace needs one or more (t, load) points")
        if duration_s is None:
            step = pts[-1][0] - pts[-2][0] if len(pts) > 1 else 1.0
            duration_s = pts[-1][0] + step
        return cls(tuple(t for t, _ in pts), tuple(x for _, x in pts), float(duration_s))

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "LoadTrace":
        """JSON (``{"points": [[t, load], ...], "duration_s": D}`` or a list of [t, load] or
        {"t", "load"}) or CSV with a ``t,load`` header. Without ``duration_s`` the last point
        lasts as long as the step before it."""
        path = Path(path)
        if not path.is_file():
            raise EdgeinfError(f"trace file not found: {path}")
        try:
            if path.suffix.lower() == ".csv":
                with open(path, newline="") as f:
                    return cls.from_points([(r["t"], cls._value(r)) for r in csv.DictReader(f)])
            data = json.loads(path.read_text())
            duration = data.get("duration_s") if isinstance(data, dict) else None
            rows = data["points"] if isinstance(data, dict) else data
            pts = [(r["t"], cls._value(r)) if isinstance(r, dict) else tuple(r) for r in rows]
            return cls.from_points(pts, duration)
        except (KeyError, ValueError, TypeError, IndexError, AttributeError, RecursionError, OverflowError) as exc:
            raise EdgeinfError(f"{path} is not a trace (JSON points [[t_s, {cls.VALUE_KEYS[0]}], ...] or CSV "
                              f"t,{cls.VALUE_KEYS[0]}): {exc}") from None

    @classmethod
    def _value(cls, row: dict):
        for k in cls.VALUE_KEYS:
            if k in row:
                return row[k]
        raise KeyError(f"no {' or '.join(cls.VALUE_KEYS)} column")

    def to_json(self) -> str:
        return json.dumps({"points": [list(p) for p in zip(self.times_s, self.loads)], "duration_s": self.duration_s})


class ContentionGenerator:
    """Runs the spinners (and optionally a memory hog) for one trace; a context manager.

    Args:
        trace: the CPU load trace.
        cores: cores the load is spread over (``None`` = ``os.cpu_count()``).
        mem_hog_mb: size of the memory-bandwidth hog's buffers (0 = no hog); it copies them
            in a loop while the trace's load is > 0 (or ``mem_trace``'s, when given).
        startup_s: the trace's t = 0 is this long after ``start()`` (child start-up time).
        mem_trace: when the hog runs (while its value is > 0), independently of the CPU trace;
            ``None`` = whenever the CPU trace's load is > 0.
    """

    def __init__(self, trace: LoadTrace, cores: int | None = None, mem_hog_mb: int = 0, startup_s: float = 0.3,
                 mem_trace: LoadTrace | None = None):
        self.trace, self.cores, self.mem_trace = trace, check_cores(cores), mem_trace
        self.mem_hog_mb, self.startup_s = check_mem_mb(mem_hog_mb), startup_s
        self.procs: list[subprocess.Popen] = []
        self.t0: float | None = None

    def start(self) -> "ContentionGenerator":
        if self.procs:
            return self
        self.t0 = time.monotonic() + self.startup_s
        n = math.ceil(self.trace.peak * self.cores - 1e-9)
        common = ["--parent", str(os.getpid()), "--t0", repr(self.t0), "--cores", str(self.cores)]
        cmds = [["spin", "--index", str(i), *common, "--trace", self.trace.to_json()] for i in range(n)]
        if self.mem_hog_mb > 0:
            mem = self.mem_trace or self.trace
            cmds.append(["memhog", "--mb", str(self.mem_hog_mb), *common, "--trace", mem.to_json()])
        atexit.register(self.stop)
        for cmd in cmds:
            self.procs.append(subprocess.Popen([sys.executable, "-m", "edgeinf.contention", *cmd],
                                               start_new_session=True, stdin=subprocess.DEVNULL,
                                               stdout=subprocess.DEVNULL))
        return self

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def elapsed_s(self) -> float:
        """Seconds since the trace's t = 0 (negative during start-up)."""
        return time.monotonic() - self.t0 if self.t0 is not None else 0.0

    def wait(self, timeout_s: float | None = None, parent_pid: int | None = None) -> list[tuple[int, int]]:
        """Wait for the children to finish the trace on their own, then reap them.

        Stops everyone early when a child fails or, with ``parent_pid``, when this process's
        parent is no longer ``parent_pid`` (the shell that started it died). Returns the
        failed children as (pid, exit code); a child stopped by this process does not count.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        failed: list[tuple[int, int]] = []
        while self.procs and not failed:
            codes = [p.poll() for p in self.procs]
            failed = [(p.pid, c) for p, c in zip(self.procs, codes) if c not in (None, 0)]
            orphaned = parent_pid is not None and os.getppid() != parent_pid
            if all(c is not None for c in codes) or orphaned or (deadline is not None and time.monotonic() > deadline):
                break
            time.sleep(0.05)
        self.stop()
        return failed

    def stop(self) -> None:
        """Terminate and reap every child (SIGTERM, then SIGKILL after 1 s). Idempotent.

        Signals and reaps by pid (``os.kill`` / ``os.waitpid``), not through ``Popen.wait``: a
        Ctrl-C that lands inside ``Popen.poll`` (the wait loop polls every 50 ms) can leave that
        Popen's internal lock held, and ``Popen.wait`` then blocks forever on it.
        """
        procs, self.procs = self.procs, []
        for p in procs:
            _send(p, signal.SIGTERM)
        deadline = time.monotonic() + 1.0
        for p in procs:
            if not _reap(p, deadline):
                _send(p, signal.SIGKILL)
                _reap(p, None)
        atexit.unregister(self.stop)

    def __enter__(self) -> "ContentionGenerator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _send(p: subprocess.Popen, sig: int) -> None:
    """Signal a child not reaped yet (gone already: nothing to do)."""
    if p.returncode is None:
        try:
            os.kill(p.pid, sig)
        except ProcessLookupError:
            pass


def _reap(p: subprocess.Popen, deadline: float | None) -> bool:
    """Wait for a child to exit (until ``deadline``; None = as long as it takes) and record its
    exit code; False if it is still running at the deadline."""
    while p.returncode is None:
        try:
            pid, status = os.waitpid(p.pid, 0 if deadline is None else os.WNOHANG)
        except ChildProcessError:  # reaped already (by Popen itself)
            p.returncode = 0 if p.returncode is None else p.returncode
            break
        if pid == p.pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            break
        if deadline is not None and time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def machine_cores() -> int:
    """CPU cores this process may run on (its affinity set where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def available_mem_mb() -> float | None:
    """Memory available to new allocations in MB (``/proc/meminfo`` or psutil), None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return psutil.virtual_memory().available / 2**20
    except Exception:  # psutil missing or unsupported here
        return None


def check_cores(cores: int | None) -> int:
    """``cores`` (``None`` = all), refused unless 1 <= cores <= the cores of this machine."""
    have = machine_cores()
    if cores is None:
        return have
    if isinstance(cores, bool) or not isinstance(cores, int) or not 1 <= cores <= have:
        raise EdgeinfError(f"cores must be an integer in 1..{have} (the cores this machine gives this process), got {cores!r}")
    return cores


MEM_SHARE = 0.5  # the hog may take at most this share of the available memory


def check_mem_mb(mem_mb: int) -> int:
    """The memory hog's size, refused unless 0 <= mem_mb <= half the memory available now."""
    if isinstance(mem_mb, bool) or not isinstance(mem_mb, int) or mem_mb < 0:
        raise EdgeinfError(f"mem_mb must be an integer >= 0, got {mem_mb!r}")
    avail = available_mem_mb()
    if mem_mb and avail is not None and mem_mb > MEM_SHARE * avail:
        raise EdgeinfError(f"a {mem_mb} MB memory hog is more than {MEM_SHARE:.0%} of the {avail:.0f} MB available here; "
                           f"use --mem-mb {int(MEM_SHARE * avail)} or less")
    return mem_mb


PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent dies (``prctl``); False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


# -- child processes ------------------------------------------------------------------------
def _child_loop(args, work) -> None:
    """Run ``work(share, until)`` per duty period until the trace ends or the parent is gone."""
    trace = LoadTrace.from_points(json.loads(args.trace)["points"], json.loads(args.trace)["duration_s"])
    parent = args.parent  # not os.getppid(): the parent may already be gone when this starts
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # nothing to clean up; no shutdown noise
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))
    while True:
        now = time.monotonic()
        t = now - args.t0
        if t >= trace.duration_s or os.getppid() != parent:
            return
        share = min(1.0, max(0.0, trace.load_at(t) * args.cores - args.index)) if t >= 0 else 0.0
        if share > 0:
            work(share, now + share * PERIOD_S)
        time.sleep(max(0.0, now + PERIOD_S - time.monotonic()))


def _spin(share: float, until: float) -> None:
    while time.monotonic() < until:
        pass


def _memhog(mb: int):
    import numpy as np

    a = np.ones(mb * 2**20 // 16, dtype=np.float64)
    b = np.empty_like(a)

    def work(share: float, until: float) -> None:
        while time.monotonic() < until:
            np.copyto(b, a)

    return work


def _child_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m edgeinf.contention")
    p.add_argument("mode", choices=("spin", "memhog"))
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--mb", type=int, default=256)
    p.add_argument("--parent", type=int, required=True)
    p.add_argument("--t0", type=float, required=True)
    p.add_argument("--trace", required=True)
    p.add_argument("--cores", type=int, required=True)
    args = p.parse_args(argv)
    set_parent_death_signal(signal.SIGTERM)  # besides the orphan check in the loop
    if os.getppid() != args.parent:
        return  # the parent died before the death signal was armed
    if args.mode == "memhog":
        args.index = 0  # on whenever the load is > 0
        args.cores = 10**6
    try:
        _child_loop(args, _spin if args.mode == "spin" else _memhog(args.mb))
    except MemoryError:
        sys.stderr.write(f"edgeinf contention: the {args.mb} MB memory hog does not fit in memory\n")
        os._exit(3)


if __name__ == "__main__":
    _child_main(sys.argv[1:])
