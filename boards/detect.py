"""Board detection from the device tree, /etc/nv_tegra_release and /proc/cpuinfo (injectable root)."""
from __future__ import annotations

import os
import platform
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeinf.boards.board_profile import BoardProfile, all_profiles
from edgeinf.boards.sysfs import read_text

_L4T_RE = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)")


@dataclass
class HostInfo:
    """Live facts about the machine (whatever the board): CPU, cores, memory, L4T release."""

    machine: str
    cpu_model: str | None
    cores_logical: int | None
    cores_physical: int | None
    memory_gb: float | None
    cores_usable: int | None = None
    l4t: str | None = None
    dt_model: str | None = None
    dt_compatible: list[str] = field(default_factory=list)


@dataclass
class Detection:
    """What :func:`detect` found: the matching profile (None if unknown), how, and the live host facts."""

    profile: BoardProfile | None
    matched_by: str
    host: HostInfo

    @property
    def name(self) -> str:
        return self.profile.name if self.profile else "unknown"

    def to_dict(self) -> dict[str, Any]:
        p = self.profile
        return {
            "board": self.name,
            "display_name": p.display_name if p else None,
            "family": p.family if p else None,
            "matched_by": self.matched_by,
            "host": asdict(self.host),
        }


def _cpuinfo_facts(text: str) -> tuple[str | None, int | None, int | None, str]:
    """(cpu model, logical cores, physical cores, machine guess) from /proc/cpuinfo text."""
    model = None
    for key in ("model name", "Model", "Hardware", "cpu model"):
        m = re.search(rf"^{key}\s*:\s*(.+)$", text, re.MULTILINE)
        if m:
            model = m.group(1).strip()
            break
    logical = len(re.findall(r"^processor\s*:", text, re.MULTILINE)) or None
    cores = {(p, c) for p, c in re.findall(r"^physical id\s*:\s*(\d+)\s*\n(?:.*\n)*?core id\s*:\s*(\d+)", text, re.MULTILINE)}
    physical = len(cores) or None
    is_x86 = re.search(r"^(vendor_id|flags)\s*:", text, re.MULTILINE) is not None
    is_arm = re.search(r"^CPU implementer\s*:", text, re.MULTILINE) is not None
    machine = "x86_64" if is_x86 else "aarch64" if is_arm else "unknown"
    return model, logical, physical, machine


def _memory_gb(root: Path) -> float | None:
    text = read_text(root, "/proc/meminfo") or ""
    m = re.search(r"^MemTotal:\s*(\d+)\s*kB", text, re.MULTILINE)
    return round(int(m.group(1)) / 1024**2, 2) if m else None


def parse_l4t_release(text: str | None) -> str | None:
    """``"# R36 (release), REVISION: 4.3, ..."`` -> ``"36.4.3"``."""
    m = _L4T_RE.search(text or "")
    return f"{m.group(1)}.{m.group(2)}" if m else None


def host_info(root: str | Path = "/") -> HostInfo:
    """Read the live host facts below ``root`` (``"/"`` also asks the OS for core counts)."""
    root = Path(root)
    model, logical, physical, machine = _cpuinfo_facts(read_text(root, "/proc/cpuinfo") or "")
    usable = logical
    if root == Path("/"):
        machine = platform.machine() or machine
        logical = os.cpu_count() or logical
        physical = _psutil_physical() or physical
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical
        model = model or platform.processor() or None
    compatible = (read_text(root, "/proc/device-tree/compatible") or "").split()
    return HostInfo(
        machine=machine, cpu_model=model, cores_logical=logical, cores_physical=physical,
        memory_gb=_memory_gb(root), cores_usable=usable,
        l4t=parse_l4t_release(read_text(root, "/etc/nv_tegra_release")),
        dt_model=read_text(root, "/proc/device-tree/model"), dt_compatible=compatible,
    )


def _psutil_physical() -> int | None:
    try:
        import psutil
    except ImportError:
        return None
    return psutil.cpu_count(logical=False)


def _closest_memory(candidates: list[BoardProfile], memory_gb: float | None) -> BoardProfile:
    if memory_gb is None or len(candidates) == 1:
        return candidates[0]
    return min(candidates, key=lambda p: abs((p.memory_gb or 0) - memory_gb))


def match_profile(host: HostInfo, profiles: list[BoardProfile] | None = None) -> tuple[BoardProfile | None, str]:
    """The profile that fits ``host`` best and the rule that matched (compatible > model > soc > machine)."""
    profiles = profiles if profiles is not None else all_profiles()
    compat = set(host.dt_compatible)
    model = host.dt_model or ""
    rules = (
        ("compatible", lambda p: bool(compat & set(p.detect.compatible))),
        ("model", lambda p: any(s in model for s in p.detect.model)),
        ("soc_compatible", lambda p: bool(compat & set(p.detect.soc_compatible))),
    )
    for rule, fits in rules:
        hits = [p for p in profiles if fits(p)]
        if hits:
            return _closest_memory(hits, host.memory_gb), rule
    hits = [p for p in profiles if host.machine in p.detect.machine]
    if hits and not compat and host.l4t is None:
        return hits[0], "machine"
    return None, "none"


def detect(root: str | Path = "/", profiles: list[BoardProfile] | None = None) -> Detection:
    """Name the board this code runs on (or the fake tree under ``root``).

    Example:
        >>> detect().name  # doctest: +SKIP
        'x86-64'
    """
    host = host_info(root)
    profile, rule = match_profile(host, profiles)
    return Detection(profile=profile, matched_by=rule, host=host)
