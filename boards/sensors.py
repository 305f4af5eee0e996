"""Board sensors for results files: power mode (nvpmodel), clocks, temperatures, GPU load, INA3221 rails (injectable root)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from edgeinf.boards import sysfs
from edgeinf.boards.board_profile import BoardProfile
from edgeinf.boards.sysfs import read_text

_POWER_MODEL_RE = re.compile(r"<\s*POWER_MODEL\s+ID\s*=\s*(\d+)\s+NAME\s*=\s*([^\s>]+)")
_PMODE_RE = re.compile(r"pmode\s*:\s*(\d+)", re.IGNORECASE)


def parse_nvpmodel_conf(text: str | None) -> dict[int, str]:
    """``< POWER_MODEL ID=2 NAME=MAXN_SUPER >`` lines -> ``{2: "MAXN_SUPER"}``."""
    return {int(i): name for i, name in _POWER_MODEL_RE.findall(text or "")}


def read_power_mode(profile: BoardProfile, root: str | Path = "/") -> dict[str, Any] | None:
    """The active nvpmodel mode ``{"id", "name", "watts", "source"}``, or None where unreadable.

    The id comes from nvpmodel's status file (``pmode:0002``); the name from /etc/nvpmodel.conf
    (the board's own table) or, failing that, from the profile.
    """
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
    """``{"cpu_mhz": [per core], "gpu_mhz": float | None}`` (from cpufreq kHz and devfreq Hz).

    Without cpufreq the per-core ``cpu MHz`` lines of /proc/cpuinfo are used (x86 hosts, VMs).
    """
    khz = sysfs.cpu_freq_khz(sysfs.cpu_freq_files(root, profile.sysfs.cpu_freq))
    cpu = [round(k / 1000.0, 1) for k in khz]
    if not cpu:  # no cpufreq (VMs, containers): the kernel's per-core "cpu MHz" in /proc/cpuinfo
        cpu = [round(float(v), 1) for v in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", read_text(root, "/proc/cpuinfo") or "",
                                                       re.MULTILINE)]
    return {"cpu_mhz": cpu, "gpu_mhz": sysfs.gpu_freq_mhz(sysfs.first_existing(root, profile.sysfs.gpu_freq))}


def read_temperatures(profile: BoardProfile, root: str | Path = "/") -> dict[str, float]:
    """``{zone type: degrees C}`` from thermal zones (files hold millidegrees)."""
    return sysfs.temps_c(root, profile.sysfs.thermal)


def read_gpu_load(profile: BoardProfile, root: str | Path = "/") -> float | None:
    """GPU load in percent (the Jetson ``load`` file holds per mille; see :mod:`edgeinf.boards.sysfs`), or None."""
    return sysfs.gpu_load_pct(sysfs.first_existing(root, profile.sysfs.gpu_load))


def read_power_rails(profile: BoardProfile, root: str | Path = "/") -> dict[str, dict[str, float]]:
    """``{rail label: {"voltage_mv", "current_ma", "power_mw"}}`` from the profile's INA3221 paths."""
    return sysfs.power_mw(root, profile.sysfs.power_rails)


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
