"""BoardProfile: the validated facts about one board, loaded from a TOML file in boards/."""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from edgeinf.errors import EdgeinfError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

SCHEMA_VERSION = 1
PROFILE_DIR = Path(__file__).resolve().parent
FAMILIES = ("jetson", "raspberry-pi", "x86-64")
BACKENDS = ("tensorrt", "onnxruntime-tensorrt", "onnxruntime-cuda", "torch-cuda", "onnxruntime-cpu", "torch-cpu")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_CC_RE = re.compile(r"^\d+\.\d+$")


class BoardProfileError(EdgeinfError):
    """A board profile file is missing a field or holds an impossible value."""


@dataclass(frozen=True)
class PowerMode:
    """One nvpmodel power mode: its id (``nvpmodel -m ID``), name and power budget (None = uncapped)."""

    id: int
    name: str
    watts: float | None = None
    default: bool = False

    def __post_init__(self) -> None:
        if self.id < 0 or not self.name:
            raise BoardProfileError(f"power mode {self.id!r}/{self.name!r}: ids are >= 0 and names non-empty")
        if self.watts is not None and self.watts <= 0:
            raise BoardProfileError(f"power mode {self.name}: watts must be positive or absent, got {self.watts}")


@dataclass(frozen=True)
class SysfsPaths:
    """Where the live readers look (absolute paths; ``*`` globs allowed; first existing one wins)."""

    gpu_load: tuple[str, ...] = ()
    gpu_freq: tuple[str, ...] = ()
    cpu_freq: tuple[str, ...] = ("/sys/devices/system/cpu/cpu*/cpufreq/scaling_cur_freq",)
    thermal: tuple[str, ...] = ("/sys/class/thermal/thermal_zone*",)
    power_rails: tuple[str, ...] = ()
    nvpmodel_status: str | None = None
    nvpmodel_conf: str | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            paths = value if isinstance(value, tuple) else (value,) if value else ()
            bad = [p for p in paths if not str(p).startswith("/")]
            if bad:
                raise BoardProfileError(f"sysfs.{f.name}: paths must be absolute, got {bad}")


@dataclass(frozen=True)
class Software:
    """The software stack the board ships with (its latest supported JetPack / OS); None = not applicable."""

    jetpack: str | None = None
    l4t: str | None = None
    cuda: str | None = None
    tensorrt: str | None = None
    python: str | None = None
    os: str | None = None


@dataclass(frozen=True)
class DetectRules:
    """How detection recognises the board.

    ``compatible``: board- or module-specific entries of /proc/device-tree/compatible (strongest);
    ``model``: substrings of /proc/device-tree/model; ``soc_compatible``: SoC-level entries shared
    by several boards (weakest: ties are broken by the installed memory).
    """

    compatible: tuple[str, ...] = ()
    model: tuple[str, ...] = ()
    soc_compatible: tuple[str, ...] = ()
    machine: tuple[str, ...] = ()


@dataclass(frozen=True)
class BoardProfile:
    """The facts edgeinf needs about one board (see docs/boards.md for every field).

    Example:
        >>> from edgeinf.boards import load_board_profile
        >>> load_board_profile("jetson-orin-nano-8gb").gpu_compute_capability
        '8.7'
    """

    name: str
    display_name: str
    family: str
    soc: str
    cpu_arch: str
    cpu_model: str
    cpu_cores: int | None
    memory_gb: float | None
    memory_type: str | None = None
    memory_bandwidth_gbs: float | None = None
    gpu: str | None = None
    gpu_compute_capability: str | None = None
    power_modes: tuple[PowerMode, ...] = ()
    sysfs: SysfsPaths = field(default_factory=SysfsPaths)
    software: Software = field(default_factory=Software)
    backends: tuple[str, ...] = ("onnxruntime-cpu",)
    detect: DetectRules = field(default_factory=DetectRules)
    notes: tuple[str, ...] = ()
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        self._check_identity()
        self._check_numbers()
        self._check_power_modes()
        unknown = [b for b in self.backends if b not in BACKENDS]
        if not self.backends or unknown:
            raise BoardProfileError(f"board {self.name}: backends must be a non-empty list from {BACKENDS}, got {unknown or 'none'}")

    def _check_identity(self) -> None:
        if self.schema != SCHEMA_VERSION:
            raise BoardProfileError(f"board {self.name}: schema {self.schema} is not supported (this edgeinf reads {SCHEMA_VERSION})")
        if not _NAME_RE.match(self.name):
            raise BoardProfileError(f"board name {self.name!r}: use lower-case letters, digits and dashes")
        if self.family not in FAMILIES:
            raise BoardProfileError(f"board {self.name}: family {self.family!r} is not one of {FAMILIES}")
        if not (self.display_name and self.soc and self.cpu_arch and self.cpu_model):
            raise BoardProfileError(f"board {self.name}: display_name, soc, cpu.arch and cpu.model are required")

    def _check_numbers(self) -> None:
        for label, value in (("cpu.cores", self.cpu_cores), ("memory.size_gb", self.memory_gb),
                             ("memory.bandwidth_gbs", self.memory_bandwidth_gbs)):
            if value is not None and value <= 0:
                raise BoardProfileError(f"board {self.name}: {label} must be positive, got {value}")
        if self.cpu_cores is None and self.family != "x86-64":
            raise BoardProfileError(f"board {self.name}: cpu.cores is required (only the generic host reads it live)")
        cc = self.gpu_compute_capability
        if cc is not None and not _CC_RE.match(cc):
            raise BoardProfileError(f"board {self.name}: gpu.compute_capability must look like '8.7', got {cc!r}")
        if self.family == "jetson" and (cc is None or self.software.jetpack is None):
            raise BoardProfileError(f"board {self.name}: a Jetson needs gpu.compute_capability and software.jetpack")

    def _check_power_modes(self) -> None:
        ids = [m.id for m in self.power_modes]
        if len(ids) != len(set(ids)):
            raise BoardProfileError(f"board {self.name}: power mode ids repeat: {ids}")
        if sum(m.default for m in self.power_modes) > 1:
            raise BoardProfileError(f"board {self.name}: at most one power mode is the default")

    def power_mode(self, mode_id: int) -> PowerMode | None:
        """The power mode with this nvpmodel id, or None."""
        return next((m for m in self.power_modes if m.id == mode_id), None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        from dataclasses import asdict

        return asdict(self)


def _tuple(value: Any) -> tuple:
    if value is None:
        return ()
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def _section(data: dict, key: str, path: Path) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise BoardProfileError(f"{path}: [{key}] must be a table")
    return value


_LAYOUT = {
    "": {"schema", "name", "display_name", "family", "soc", "notes", "cpu", "gpu", "memory", "power_modes",
         "sysfs", "software", "backends", "detect"},
    "cpu": {"arch", "model", "cores"},
    "gpu": {"name", "compute_capability"},
    "memory": {"size_gb", "type", "bandwidth_gbs"},
    "backends": {"preference"},
}


def _check_layout(data: dict[str, Any], path: Path) -> None:
    for table, allowed in _LAYOUT.items():
        section = data if not table else data.get(table, {})
        extra = sorted(set(section) - allowed) if isinstance(section, dict) else []
        if extra:
            where = f"[{table}]" if table else "the top level"
            raise BoardProfileError(f"{path}: unexpected field(s) {extra} in {where}; see docs/boards.md for the layout")


def profile_from_dict(data: dict[str, Any], path: Path | str = "<dict>") -> BoardProfile:
    """Build and validate a :class:`BoardProfile` from the parsed TOML layout (see boards/*.toml)."""
    path = Path(path)
    _check_layout(data, path)
    cpu, gpu, mem = (_section(data, k, path) for k in ("cpu", "gpu", "memory"))
    sysfs, software, det = (_section(data, k, path) for k in ("sysfs", "software", "detect"))
    try:
        return BoardProfile(
            name=data["name"], display_name=data["display_name"], family=data["family"], soc=data["soc"],
            cpu_arch=cpu["arch"], cpu_model=cpu["model"], cpu_cores=cpu.get("cores"),
            memory_gb=mem.get("size_gb"), memory_type=mem.get("type"), memory_bandwidth_gbs=mem.get("bandwidth_gbs"),
            gpu=gpu.get("name"), gpu_compute_capability=gpu.get("compute_capability"),
            power_modes=tuple(PowerMode(**m) for m in data.get("power_modes", [])),
            sysfs=SysfsPaths(**{k: (v if k.startswith("nvpmodel") else _tuple(v)) for k, v in sysfs.items()}),
            software=Software(**software),
            backends=_tuple(_section(data, "backends", path).get("preference", ["onnxruntime-cpu"])),
            detect=DetectRules(**{k: _tuple(v) for k, v in det.items()}),
            notes=_tuple(data.get("notes")), schema=data.get("schema", SCHEMA_VERSION),
        )
    except KeyError as exc:
        raise BoardProfileError(f"{path}: missing field {exc.args[0]!r}; see docs/boards.md for the layout") from exc
    except TypeError as exc:
        raise BoardProfileError(f"{path}: unexpected field ({exc}); see docs/boards.md for the layout") from exc


def load_profile_file(path: str | Path) -> BoardProfile:
    """Load and validate one profile file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BoardProfileError(f"no board profile at {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise BoardProfileError(f"{path} is not valid TOML: {exc}") from exc
    profile = profile_from_dict(data, path)
    if profile.name != path.stem:
        raise BoardProfileError(f"{path}: name {profile.name!r} must match the file name {path.stem!r}")
    return profile


def profile_names() -> list[str]:
    """Names of the shipped profiles, sorted."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load_board_profile(name: str) -> BoardProfile:
    """Load a shipped profile by name (e.g. ``"jetson-agx-orin-64gb"``) or a path to a .toml file."""
    if name.endswith(".toml") or "/" in name:
        return load_profile_file(name)
    if name not in profile_names():
        raise BoardProfileError(f"unknown board {name!r}; `edgeinf boards list` shows the known ones")
    return load_profile_file(PROFILE_DIR / f"{name}.toml")


def all_profiles() -> list[BoardProfile]:
    """Every shipped profile, validated."""
    return [load_board_profile(n) for n in profile_names()]
