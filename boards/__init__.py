"""Board profiles (Jetson, Raspberry Pi, x86 hosts) and detection (installed as edgeinf.boards).

Live readings (GPU load, clocks, temperatures, power rails) go through one reader,
:mod:`edgeinf.boards.sysfs`, with one unit per quantity in its name.

Example:
    >>> from edgeinf.boards import detect, load_board_profile
    >>> load_board_profile("jetson-agx-orin-64gb").cpu_cores
    12
    >>> detect().name  # doctest: +SKIP
    'x86-64'
"""
from edgeinf.boards.detect import Detection, HostInfo, detect, host_info, match_profile
from edgeinf.boards.board_profile import (
    BoardProfile,
    BoardProfileError,
    PowerMode,
    all_profiles,
    load_board_profile,
    load_profile_file,
    profile_names,
)
from edgeinf.boards.sensors import (
    read_clocks,
    read_gpu_load,
    read_power_mode,
    read_power_rails,
    read_temperatures,
    snapshot,
)

__all__ = [
    "BoardProfile", "BoardProfileError", "PowerMode", "Detection", "HostInfo",
    "all_profiles", "load_board_profile", "load_profile_file", "profile_names",
    "detect", "host_info", "match_profile",
    "read_clocks", "read_gpu_load", "read_power_mode", "read_power_rails", "read_temperatures", "snapshot",
]
