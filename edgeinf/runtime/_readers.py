"""Raw contention counters from procfs/sysfs (under an injectable root) or from psutil."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from edgeinf.boards import sysfs

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
    cpu_freq_khz: tuple[float, ...]
    gpu_load_pct: float | None
    gpu_freq_mhz: float | None

    @property
    def cpu_freq_mhz(self) -> float | None:
        """The mean clock over the cores in MHz (None where cpufreq is unreadable)."""
        return sum(self.cpu_freq_khz) / len(self.cpu_freq_khz) / 1e3 if self.cpu_freq_khz else None


class ProcfsReader:
    """Reads /proc and /sys below ``root`` (``"/"`` on a real device, a tmp tree in tests).

    ``gpu_paths`` (the board profile's sysfs section, paths taken below ``root``): ``load``
    (Jetson's GPU ``load`` file) and ``freq`` (a devfreq ``cur_freq``); each a path or a list of
    candidates (globs allowed), the first existing one is used. Files are found once, here, and
    read and converted by :mod:`edgeinf.boards.sysfs`.
    """

    def __init__(self, root: str | os.PathLike = "/", gpu_paths: Mapping[str, object] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.root = Path(root)
        gpu_paths = dict(gpu_paths or {})
        self._gpu_load_file = sysfs.first_existing(self.root, gpu_paths.get("load", gpu_paths.get("gpu_load")))
        self._gpu_freq_file = sysfs.first_existing(self.root, gpu_paths.get("freq", gpu_paths.get("gpu_freq")))
        self.clock = clock
        self._freq_files = sysfs.cpu_freq_files(self.root)

    @staticmethod
    def available(root: str | os.PathLike = "/") -> bool:
        return (Path(root) / "proc/stat").is_file()

    def read(self) -> Counters:
        busy, total, running = self._stat()
        return Counters(self.clock(), busy, total, self._own(), running, self._loadavg(), self._mem(),
                        sysfs.cpu_freq_khz(self._freq_files), sysfs.gpu_load_pct(self._gpu_load_file),
                        sysfs.gpu_freq_mhz(self._gpu_freq_file))

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
                        ps.virtual_memory().available / 2**20, (freq.current * 1e3,) if freq else (), None, None)


def gpu_paths_from_board(board: object) -> dict:
    """``{"load": [...], "freq": [...]}`` from a BoardProfile (``.sysfs``), a dict, or None."""
    if board is None:
        return {}
    if isinstance(board, Mapping):
        return dict(board)
    paths = getattr(board, "sysfs", None)
    return {"load": list(getattr(paths, "gpu_load", ())), "freq": list(getattr(paths, "gpu_freq", ()))}
