"""The one reader of sysfs / procfs values (below an injectable root), one unit per quantity in its name.

Device side: stdlib only. Both the board sensors (:mod:`edgeinf.boards.sensors`) and the runtime's
contention counters (:mod:`edgeinf.runtime._readers`) read through this module, so every file is
parsed and converted in one place:

- ``gpu_load_pct``: Jetson GPU load in percent. The nvgpu driver's ``load`` file holds per mille
  (0-1000) on every generation that has it; jetson-stats (``jtop/core/gpu.py``,
  ``igpu_read_status``) divides it by 10 for the percent it shows, which matches tegrastats'
  ``GR3D_FREQ X%``. Where the file lives:
  Nano (gm20b) ``/sys/devices/gpu.0/load`` or ``/sys/devices/57000000.gpu/load``;
  TX2 (gp10b) ``/sys/devices/gpu.0/load`` or ``/sys/devices/17000000.gp10b/load``;
  Xavier (gv11b) ``/sys/devices/gpu.0/load``, ``/sys/devices/platform/gpu.0/load`` or
  ``/sys/devices/17000000.gv11b/load``;
  Orin (ga10b) JetPack 5 ``/sys/devices/17000000.ga10b/load`` or ``/sys/devices/platform/gpu.0/load``,
  JetPack 6 ``/sys/devices/platform/bus@0/17000000.gpu/load`` (jtop finds it as the ``device`` of
  the devfreq node whose ``of_node/name`` is gm20b / gp10b / gv11b / ga10b / gpu).
  Thor (JetPack 7, OpenRM ``nvidia.ko`` instead of nvgpu): jtop's Thor backend
  (``jtop/core/thor_gpu.py``) looks for a ``load`` file under the devfreq nodes (``gpu-gpc-0``)
  and guesses its scale (value / 10 only if above 100), so there is no documented format; the
  Thor profile names no GPU load file and the reading is None there.
- ``gpu_freq_mhz``: devfreq ``cur_freq`` holds Hz.
- ``cpu_freq_khz``: cpufreq ``scaling_cur_freq`` holds kHz, one value per core (cpu0, cpu1, ...).
- ``temp_c``: thermal zone ``temp`` holds millidegrees Celsius.
- ``power_mw``: INA3221 rails, hwmon (mV x mA) or iio (mW).
"""
from __future__ import annotations

import glob
import os
import re
from pathlib import Path
from typing import Iterable

CPU_FREQ_FILES = "/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq"
_CPU_NUMBER_RE = re.compile(r"/cpu(\d+)/")


def read_text(root: str | os.PathLike, path: str) -> str | None:
    """``root/path`` as text (NUL bytes become newlines), or None if absent or unreadable."""
    try:
        data = (Path(root) / str(path).lstrip("/")).read_bytes()
    except OSError:
        return None
    return data.replace(b"\x00", b"\n").decode("utf-8", errors="replace").strip()


def read_number(path: str | os.PathLike | None) -> float | None:
    """The first number in the file, or None if absent, unreadable or not a number."""
    if path is None:
        return None
    try:
        return float(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def matches(root: str | os.PathLike, pattern: str) -> list[Path]:
    """Existing paths matching the absolute ``pattern`` (globs allowed) below ``root``, sorted."""
    rel = str(pattern).lstrip("/")
    return sorted(Path(p) for p in glob.glob(str(Path(root) / rel)))


def first_existing(root: str | os.PathLike, candidates: str | os.PathLike | Iterable[str] | None) -> Path | None:
    """The first existing path among ``candidates`` (one path or a list, globs allowed) below ``root``."""
    if not candidates:
        return None
    for pattern in [candidates] if isinstance(candidates, (str, os.PathLike)) else candidates:
        hits = matches(root, str(pattern))
        if hits:
            return hits[0]
    return None


# -- one conversion per quantity -------------------------------------------------------------
def gpu_load_pct(path: Path | None) -> float | None:
    """GPU load in percent from a Jetson ``load`` file (per mille, 0-1000; see the module docstring)."""
    per_mille = read_number(path)
    return None if per_mille is None else round(per_mille / 10.0, 1)


def gpu_freq_mhz(path: Path | None) -> float | None:
    """GPU clock in MHz from a devfreq ``cur_freq`` file (Hz)."""
    hz = read_number(path)
    return None if hz is None else round(hz / 1e6, 1)


def cpu_freq_files(root: str | os.PathLike, patterns: Iterable[str] = (CPU_FREQ_FILES,)) -> list[Path]:
    """The cpufreq ``scaling_cur_freq`` files below ``root``, in core order (cpu2 before cpu10)."""
    files = {p for pattern in patterns for p in matches(root, pattern)}
    return sorted(files, key=_core_number)


def cpu_freq_khz(files: Iterable[Path]) -> tuple[float, ...]:
    """Current clock of each core in kHz (cpufreq's own unit); unreadable cores are left out."""
    values = (read_number(f) for f in files)
    return tuple(v for v in values if v is not None)


def temp_c(zone: Path) -> float | None:
    """Temperature of a thermal zone directory in degrees C (its ``temp`` file holds millidegrees)."""
    milli = read_number(zone / "temp")
    return None if milli is None else round(milli / 1000.0, 2)


def temps_c(root: str | os.PathLike, patterns: Iterable[str]) -> dict[str, float]:
    """``{zone type: degrees C}`` for every thermal zone matching ``patterns``."""
    temps: dict[str, float] = {}
    for pattern in patterns:
        for zone in matches(root, pattern):
            value = temp_c(zone)
            if value is None:
                continue
            kind = read_text(zone, "type") or zone.name
            temps[kind if kind not in temps else f"{kind}-{zone.name}"] = value
    return temps


def power_mw(root: str | os.PathLike, patterns: Iterable[str]) -> dict[str, dict[str, float | None]]:
    """``{rail label: {"voltage_mv", "current_ma", "power_mw"}}`` of the INA3221 directories matching ``patterns``."""
    rails: dict[str, dict[str, float | None]] = {}
    for pattern in patterns:
        for d in matches(root, pattern):
            rails.update(_hwmon_rails(d) or _iio_rails(d))
    return rails


def _hwmon_rails(d: Path) -> dict[str, dict[str, float | None]]:
    """INA3221 through hwmon (JetPack 5+): ``in{N}_label``, ``in{N}_input`` mV, ``curr{N}_input`` mA."""
    rails = {}
    for label_file in sorted(d.glob("in*_label")):
        n = label_file.name[2:-len("_label")]
        label = read_text(d, label_file.name)
        mv, ma = read_number(d / f"in{n}_input"), read_number(d / f"curr{n}_input")
        if label and mv is not None and ma is not None and not label.lower().startswith("sum of"):
            rails[label] = {"voltage_mv": mv, "current_ma": ma, "power_mw": round(mv * ma / 1000.0, 1)}
    return rails


def _iio_rails(d: Path) -> dict[str, dict[str, float | None]]:
    """INA3221 through iio (JetPack 4): ``rail_name_N``, ``in_power{N}_input`` mW and friends."""
    rails = {}
    for name_file in sorted(d.glob("rail_name_*")):
        n = name_file.name.rsplit("_", 1)[1]
        label = read_text(d, name_file.name)
        mw = read_number(d / f"in_power{n}_input")
        if label and mw is not None:
            rails[label] = {"voltage_mv": read_number(d / f"in_voltage{n}_input"),
                            "current_ma": read_number(d / f"in_current{n}_input"), "power_mw": mw}
    return rails


def _core_number(path: Path) -> tuple[int, str]:
    m = _CPU_NUMBER_RE.search(str(path))
    return (int(m.group(1)) if m else -1, str(path))
