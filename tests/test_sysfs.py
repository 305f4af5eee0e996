"""The one sysfs reader: each Jetson generation's GPU load layout, per-core cpufreq, and one unit
per quantity shared by the board sensors and the runtime's contention counters (fake trees)."""
from __future__ import annotations

from pathlib import Path

import pytest

from edgeinf.boards import load_board_profile, read_clocks, read_gpu_load, snapshot, sysfs
from edgeinf.runtime._readers import ProcfsReader, gpu_paths_from_board
from edgeinf.runtime.monitor import Monitor, MonitorConfig

# where each generation's nvgpu driver puts its per-mille ``load`` file (boards/sysfs.py cites the sources)
GPU_LOAD_LAYOUTS = [
    ("jetson-nano", "/sys/devices/gpu.0/load"),
    ("jetson-nano", "/sys/devices/57000000.gpu/load"),
    ("jetson-tx2", "/sys/devices/gpu.0/load"),
    ("jetson-tx2", "/sys/devices/17000000.gp10b/load"),
    ("jetson-agx-xavier", "/sys/devices/platform/gpu.0/load"),
    ("jetson-agx-xavier", "/sys/devices/17000000.gv11b/load"),
    ("jetson-xavier-nx", "/sys/devices/17000000.gv11b/load"),
    ("jetson-agx-orin-64gb", "/sys/devices/17000000.ga10b/load"),  # JetPack 5
    ("jetson-orin-nano-8gb", "/sys/devices/platform/bus@0/17000000.gpu/load"),  # JetPack 6
    ("jetson-orin-nx-16gb", "/sys/devices/platform/gpu.0/load"),
]


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def proc_tree(root: Path) -> None:
    """The minimum procfs the contention reader needs."""
    write(root, "/proc/stat", "cpu  0 0 0 0 0 0 0 0\ncpu0 10 0 0 90 0 0 0 0\nprocs_running 1\n")
    write(root, "/proc/self/stat", "1 (x) S" + " 0" * 40 + "\n")
    write(root, "/proc/loadavg", "0.5 0.5 0.5 1/100 1\n")
    write(root, "/proc/meminfo", "MemAvailable: 1024 kB\n")


@pytest.mark.parametrize("board,path", GPU_LOAD_LAYOUTS)
def test_gpu_load_per_mille_reads_as_percent_on_every_generation(tmp_path, board, path):
    write(tmp_path, path, "537\n")  # 53.7 % (tegrastats would print GR3D_FREQ 53%)
    profile = load_board_profile(board)
    assert read_gpu_load(profile, tmp_path) == pytest.approx(53.7)
    proc_tree(tmp_path)
    counters = ProcfsReader(tmp_path, gpu_paths_from_board(profile)).read()
    assert counters.gpu_load_pct == pytest.approx(53.7)  # the runtime reads the same unit


def test_monitor_gpu_load_is_the_same_reading_as_a_fraction(tmp_path):
    profile = load_board_profile("jetson-orin-nano-8gb")
    write(tmp_path, "/sys/devices/platform/bus@0/17000000.gpu/load", "1000\n")
    proc_tree(tmp_path)
    m = Monitor(MonitorConfig(root=str(tmp_path), gpu_paths=gpu_paths_from_board(profile), source="procfs"))
    assert m.update().gpu_load == pytest.approx(1.0)
    assert snapshot(profile, tmp_path)["gpu_load_pct"] == pytest.approx(100.0)


def test_thor_names_no_gpu_load_file_and_reads_none(tmp_path):
    write(tmp_path, "/sys/devices/gpu.0/load", "500\n")
    assert load_board_profile("jetson-thor").sysfs.gpu_load == ()
    assert read_gpu_load(load_board_profile("jetson-thor"), tmp_path) is None


def test_cpu_freq_khz_per_core_in_core_order(tmp_path):
    for cpu in (0, 1, 2, 10):
        write(tmp_path, f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_cur_freq", f"{100000 * (cpu + 1)}\n")
    write(tmp_path, "/sys/devices/system/cpu/cpufreq/policy0/scaling_cur_freq", "1\n")  # not a core
    files = sysfs.cpu_freq_files(tmp_path)
    assert [f.parent.parent.name for f in files] == ["cpu0", "cpu1", "cpu2", "cpu10"]
    assert sysfs.cpu_freq_khz(files) == (100000.0, 200000.0, 300000.0, 1100000.0)
    assert read_clocks(load_board_profile("jetson-orin-nano-8gb"), tmp_path)["cpu_mhz"] == [100.0, 200.0, 300.0, 1100.0]
    proc_tree(tmp_path)
    counters = ProcfsReader(tmp_path).read()
    assert counters.cpu_freq_khz == (100000.0, 200000.0, 300000.0, 1100000.0)
    assert counters.cpu_freq_mhz == pytest.approx(425.0)


def test_other_quantities_and_unreadable_files(tmp_path):
    zone = write(tmp_path, "/sys/class/thermal/thermal_zone0/temp", "41500\n").parent
    write(tmp_path, "/sys/class/thermal/thermal_zone0/type", "cpu-thermal\n")
    assert sysfs.temp_c(zone) == 41.5
    assert sysfs.temps_c(tmp_path, ["/sys/class/thermal/thermal_zone*"]) == {"cpu-thermal": 41.5}
    freq = write(tmp_path, "/sys/devices/x/devfreq/x/cur_freq", "306000000\n")
    assert sysfs.gpu_freq_mhz(freq) == 306.0
    bad = write(tmp_path, "/sys/devices/gpu.0/load", "n/a\n")
    assert sysfs.gpu_load_pct(bad) is None and sysfs.gpu_load_pct(None) is None
    assert sysfs.gpu_load_pct(tmp_path / "absent") is None
    assert sysfs.first_existing(tmp_path, ["/nope", "/sys/devices/*/devfreq/*/cur_freq"]) == freq
    assert sysfs.read_text(tmp_path, "/absent") is None
