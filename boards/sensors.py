"""Live readers: power mode (nvpmodel), clocks, temperatures, GPU load and INA3221 power rails (injectable root)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from edgeinf.boards.detect import read_text
from edgeinf.boards.board_profile import BoardProfile

_POWER_MODEL_RE = re.compile(r"<\s*POWER_MODEL\s+ID\s*=\s*(\d+)\s+NAME\s*=\s*([^\s>]+)")
_PMODE_RE = re.compile(r"pmode\s*:\s*(\d+)", re.IGNORECASE)


def _under(root: Path, pattern: str) -> list[Path]:
    """Paths matching the absolute glob ``pattern`` below ``root``, sorted."""
    rel = pattern.lstrip("/")
    if not any(c in rel for c in "*?["):
        path = root / rel
        return [path] if path.exists() else []
    return sorted(root.glob(rel))


def _first(root: Path, patterns: tuple[str, ...]) -> Path | None:
    for pattern in patterns:
        hits = _under(root, pattern)
        if hits:
            return hits[0]
    return None


def _number(path: Path) -> float | None:
    try:
        return float(path.read_text().strip().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def parse_nvpmodel_conf(text: str | None) -> dict[int, str]:
    """``< POWER_MODEL ID=2 NAME=MAXN_SUPER >`` lines -> ``{2: "MAXN_SUPER"}``."""
    return {int(i): name for i, name in _POWER_MODEL_RE.findall(text or "")}


def read_power_mode(profile: BoardProfile, root: str | Path = "/") -> dict[str, Any] | None:
    """The active nvpmodel mode ``{"id", "name", "watts", "source"}``, or None where unreadable.

    The id comes from nvpmodel's status file (``pmode:0002``); the name from /etc/nvpmodel.conf
    (the board's own table) or, failing that, from the profile.
    """
    root = Path(root)
    status = read_text(root, profile.sysfs.nvpmodel_status) if profile.sysfs.nvpmodel_status else None
    m = _PMODE_RE.search(status or "")
    if not m:
        return None
    mode_id = int(m.group(1))
    conf = parse_nvpmodel_conf(read_text(root, profile.sysfs.nvpmodel_conf)) if profile.sysfs.nvpmodel_conf else {}
    known = profile.power_mode(mode_id)
    name = conf.get(mode_id) or (known.name if known else None)
    watts = known.watts if known and (name is None or name == known.name) else None
    return {"id": mode_id, "name": name, "watts": watts, "source": "nvpmodel_conf" if mode_id in conf else "profile"}


def read_clocks(profile: BoardProfile, root: str | Path = "/") -> dict[str, Any]:
    """``{"cpu_mhz": [per core], "gpu_mhz": float | None}`` (cpufreq reports kHz, devfreq Hz).

    Without cpufreq the per-core ``cpu MHz`` lines of /proc/cpuinfo are used (x86 hosts, VMs).
    """
    root = Path(root)
    cpu = []
    for pattern in profile.sysfs.cpu_freq:
        for path in _under(root, pattern):
            khz = _number(path)
            if khz is not None:
                cpu.append(round(khz / 1000.0, 1))
    if not cpu:  # no cpufreq (VMs, containers): the kernel's per-core "cpu MHz" in /proc/cpuinfo
        cpu = [round(float(v), 1) for v in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", read_text(root, "/proc/cpuinfo") or "",
                                                       re.MULTILINE)]
    gpu_path = _first(root, profile.sysfs.gpu_freq)
    hz = _number(gpu_path) if gpu_path else None
    return {"cpu_mhz": cpu, "gpu_mhz": round(hz / 1e6, 1) if hz is not None else None}


def read_temperatures(profile: BoardProfile, root: str | Path = "/") -> dict[str, float]:
    """``{zone type: degrees C}`` from thermal zones (files hold millidegrees)."""
    root = Path(root)
    temps: dict[str, float] = {}
    for pattern in profile.sysfs.thermal:
        for zone in _under(root, pattern):
            milli = _number(zone / "temp")
            if milli is None:
                continue
            kind = read_text(zone, "type") or zone.name
            key = kind if kind not in temps else f"{kind}-{zone.name}"
            temps[key] = round(milli / 1000.0, 2)
    return temps


def read_gpu_load(profile: BoardProfile, root: str | Path = "/") -> float | None:
    """GPU load in percent (the Jetson ``load`` file holds tenths of a percent), or None."""
    path = _first(Path(root), profile.sysfs.gpu_load)
    value = _number(path) if path else None
    return round(value / 10.0, 1) if value is not None else None


def _hwmon_rails(d: Path) -> dict[str, dict[str, float]]:
    """INA3221 through hwmon (JetPack 5+): ``in{N}_label``, ``in{N}_input`` mV, ``curr{N}_input`` mA."""
    rails = {}
    for label_file in sorted(d.glob("in*_label")):
        n = label_file.name[2:-len("_label")]
        label = read_text(d, label_file.name)
        mv, ma = _number(d / f"in{n}_input"), _number(d / f"curr{n}_input")
        if label and mv is not None and ma is not None and not label.lower().startswith("sum of"):
            rails[label] = {"voltage_mv": mv, "current_ma": ma, "power_mw": round(mv * ma / 1000.0, 1)}
    return rails


def _iio_rails(d: Path) -> dict[str, dict[str, float]]:
    """INA3221 through iio (JetPack 4): ``rail_name_N``, ``in_power{N}_input`` mW and friends."""
    rails = {}
    for name_file in sorted(d.glob("rail_name_*")):
        n = name_file.name.rsplit("_", 1)[1]
        label = read_text(d, name_file.name)
        mw = _number(d / f"in_power{n}_input")
        if label and mw is not None:
            rails[label] = {"voltage_mv": _number(d / f"in_voltage{n}_input"),
                            "current_ma": _number(d / f"in_current{n}_input"), "power_mw": mw}
    return rails


def read_power_rails(profile: BoardProfile, root: str | Path = "/") -> dict[str, dict[str, float]]:
    """``{rail label: {"voltage_mv", "current_ma", "power_mw"}}`` from the profile's INA3221 paths."""
    rails: dict[str, dict[str, float]] = {}
    for pattern in profile.sysfs.power_rails:
        for d in _under(Path(root), pattern):
            rails.update(_hwmon_rails(d) or _iio_rails(d))
    return rails


def snapshot(profile: BoardProfile | None, root: str | Path = "/") -> dict[str, Any]:
    """Everything readable right now, for results files (unreadable parts are None or empty)."""
    if profile is None:
        return {"power_mode": None, "clocks": None, "temperatures_c": {}, "gpu_load_pct": None, "power_rails": {}}
    return {
        "power_mode": read_power_mode(profile, root),
        "clocks": read_clocks(profile, root),
        "temperatures_c": read_temperatures(profile, root),
        "gpu_load_pct": read_gpu_load(profile, root),
        "power_rails": read_power_rails(profile, root),
    }
