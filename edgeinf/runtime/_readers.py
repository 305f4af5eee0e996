"""Raw contention counters from procfs/sysfs (under an injectable root) or from psutil."""
from __future__ import annotations

import glob
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class Counters:
    """Cumulative CPU times (seconds) and instantaneous readings at time ``t_s``."""

    t_s: float
    core_busy_s: tuple[float, ...]
    core_total_s: tuple[float, ...]
    own_cpu_s: float
    procs_running: int
    loadavg1: float
    mem_available_mb: float
    cpu_freq_mhz: float | None
    gpu_load: float | None
    gpu_freq_mhz: float | None


class ProcfsReader:
    """Reads /proc and /sys below ``root`` (``"/"`` on a real device, a tmp tree in tests).

    ``gpu_paths`` (the board profile's sysfs section, paths taken below ``root``): ``load``
    (GPU load in per mille, as Jetson's ``/sys/devices/gpu.0/load``) and ``freq`` (current
    GPU clock in Hz, a devfreq ``cur_freq``); each a path or a list of candidates (globs
    allowed), the first existing one is used.
    """

    def __init__(self, root: str | os.PathLike = "/", gpu_paths: Mapping[str, object] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.root = Path(root)
        gpu_paths = dict(gpu_paths or {})
        self._gpu_load_file = first_existing(self.root, gpu_paths.get("load", gpu_paths.get("gpu_load")))
        self._gpu_freq_file = first_existing(self.root, gpu_paths.get("freq", gpu_paths.get("gpu_freq")))
        self.clock = clock
        self._freq_files = sorted(glob.glob(str(self.root / "sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq")))

    @staticmethod
    def available(root: str | os.PathLike = "/") -> bool:
        return (Path(root) / "proc/stat").is_file()

    def read(self) -> Counters:
        busy, total, running = self._stat()
        return Counters(self.clock(), busy, total, self._own(), running, self._loadavg(), self._mem(),
                        self._freq(), self._gpu_load(), self._gpu_freq())

    def _stat(self) -> tuple[tuple[float, ...], tuple[float, ...], int]:
        busy, total, running = [], [], 0
        for line in (self.root / "proc/stat").read_text().splitlines():
            if line.startswith("cpu") and line[3:4].isdigit():
                v = [int(x) for x in line.split()[1:9]]  # user nice system idle iowait irq softirq steal
                tot = sum(v)
                total.append(tot / _CLK_TCK)
                busy.append((tot - v[3] - v[4]) / _CLK_TCK)
            elif line.startswith("procs_running"):
                running = int(line.split()[1])
        return tuple(busy), tuple(total), running

    def _own(self) -> float:
        text = (self.root / "proc/self/stat").read_text()
        fields = text[text.rindex(")") + 2:].split()  # fields[0] is field 3 (state)
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime + stime

    def _loadavg(self) -> float:
        return float((self.root / "proc/loadavg").read_text().split()[0])

    def _mem(self) -> float:
        for line in (self.root / "proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024.0
        return float("nan")

    def _freq(self) -> float | None:
        khz = cpu_freq_khz(self._freq_files)
        return None if khz is None else khz / 1e3

    def _gpu_load(self) -> float | None:
        v = _read_number(self._gpu_load_file) if self._gpu_load_file else None
        return None if v is None else v / 1000.0

    def _gpu_freq(self) -> float | None:
        v = _read_number(self._gpu_freq_file) if self._gpu_freq_file else None
        return None if v is None else v / 1e6


class PsutilReader:
    """The same counters through psutil (hosts without /proc: macOS, Windows)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        from edgeinf import _lazy

        self.psutil = _lazy.require("psutil", "the contention monitor")
        self.process = self.psutil.Process()
        self.clock = clock

    def read(self) -> Counters:
        ps = self.psutil
        cores = ps.cpu_times(percpu=True)
        total = tuple(sum(c) for c in cores)
        busy = tuple(t - c.idle - getattr(c, "iowait", 0.0) for t, c in zip(total, cores))
        own = self.process.cpu_times()
        freq = ps.cpu_freq() if hasattr(ps, "cpu_freq") else None
        return Counters(self.clock(), busy, total, own.user + own.system, 0, os.getloadavg()[0],
                        ps.virtual_memory().available / 2**20, freq.current if freq else None, None, None)


def cpu_freq_khz(files) -> float | None:
    """Mean current CPU clock in kHz over cpufreq ``scaling_cur_freq`` files; None where none is
    readable (VMs, containers). The latency model scales its prediction by the clock's ratio to the
    first call's; this is the one place that reads it."""
    vals = [v for v in (_read_number(f) for f in files) if v is not None]
    return sum(vals) / len(vals) if vals else None


def first_existing(root: Path, candidates: object) -> Path | None:
    """The first existing file among ``candidates`` (a path or a list; globs allowed) below ``root``."""
    if not candidates:
        return None
    for pattern in [candidates] if isinstance(candidates, (str, os.PathLike)) else candidates:
        hits = sorted(glob.glob(str(root / str(pattern).lstrip("/"))))
        if hits:
            return Path(hits[0])
    return None


def gpu_paths_from_board(board: object) -> dict:
    """``{"load": [...], "freq": [...]}`` from a BoardProfile (``.sysfs``), a dict, or None."""
    if board is None:
        return {}
    if isinstance(board, Mapping):
        return dict(board)
    sysfs = getattr(board, "sysfs", None)
    return {"load": list(getattr(sysfs, "gpu_load", ())), "freq": list(getattr(sysfs, "gpu_freq", ()))}


def _read_number(path: str | os.PathLike) -> float | None:
    try:
        return float(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
