"""Monitor: snapshots from a fake /proc + sysfs tree (hand-computed), the sampler thread, psutil fallback."""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from edgeinf.errors import EdgeinfError
from edgeinf.runtime._readers import gpu_paths_from_board
from edgeinf.runtime.monitor import Monitor, MonitorConfig

TCK = os.sysconf("SC_CLK_TCK")


def write_tree(root, cores, own_ticks, running, load=3.0, mem_kb=2048000, freqs_khz=(1200000, 1800000),
               gpu_load=765, gpu_hz=918000000):
    """cores: [(busy_ticks, idle_ticks)] per core."""
    (root / "proc/self").mkdir(parents=True, exist_ok=True)
    lines = ["cpu  0 0 0 0 0 0 0 0 0 0"]
    lines += [f"cpu{i} {b} 0 0 {idle} 0 0 0 0 0 0" for i, (b, idle) in enumerate(cores)]
    lines += ["intr 1", f"procs_running {running}", "procs_blocked 0"]
    (root / "proc/stat").write_text("\n".join(lines) + "\n")
    fields = ["S"] + ["0"] * 10 + [str(own_ticks), "0"] + ["0"] * 30
    (root / "proc/self/stat").write_text("1234 (py thon) " + " ".join(fields) + "\n")
    (root / "proc/loadavg").write_text(f"{load} 1.0 1.0 3/400 999\n")
    (root / "proc/meminfo").write_text(f"MemTotal: 4096000 kB\nMemFree: 100 kB\nMemAvailable: {mem_kb} kB\n")
    for i, f in enumerate(freqs_khz):
        d = root / f"sys/devices/system/cpu/cpu{i}/cpufreq"
        d.mkdir(parents=True, exist_ok=True)
        (d / "scaling_cur_freq").write_text(f"{f}\n")
    gpu = root / "sys/devices/platform/gpu.0"
    gpu.mkdir(parents=True, exist_ok=True)
    (gpu / "load").write_text(f"{gpu_load}\n")
    (gpu / "cur_freq").write_text(f"{gpu_hz}\n")


class Clock:
    t = 0.0

    def __call__(self):
        return self.t


def make_monitor(root, window_s=0.2):
    clock = Clock()
    gpu = {"load": ["/sys/devices/gpu.0/load", "/sys/devices/platform/gpu.0/load"],
           "freq": "/sys/devices/platform/gpu.*/cur_freq"}
    cfg = MonitorConfig(root=str(root), gpu_paths=gpu, window_s=window_s, source="procfs")
    return Monitor(cfg, clock=clock), clock


def test_snapshot_from_fake_tree_matches_hand_computation(tmp_path):
    write_tree(tmp_path, [(100, 900), (0, 1000)], own_ticks=10, running=3)
    m, clock = make_monitor(tmp_path)
    m.update()
    clock.t = 0.2
    write_tree(tmp_path, [(250, 950), (50, 1150)], own_ticks=50, running=5)
    s = m.update()
    # deltas: busy 150+50=200 of 400 ticks -> 0.5; own 40/400 = 0.1 -> others 0.4
    assert s.other_cpu == pytest.approx(0.4) and s.own_cpu == pytest.approx(0.1)
    assert s.per_core == pytest.approx((0.75, 0.25))
    assert s.runnable_per_core == pytest.approx(((3 - 1) + (5 - 1)) / 2 / 2)  # minus the sampler, per core
    assert s.load_per_core == pytest.approx(1.5)
    assert s.mem_available_mb == pytest.approx(2000.0)
    assert s.cpu_freq_mhz == pytest.approx(1500.0)
    assert s.gpu_load == pytest.approx(0.765) and s.gpu_freq_mhz == pytest.approx(918.0)
    assert s.features() == pytest.approx((0.4, 1.5, 0.765))
    assert TCK > 0  # ticks cancel in the ratios


def test_window_drops_old_samples(tmp_path):
    write_tree(tmp_path, [(0, 100), (0, 100)], own_ticks=0, running=1)
    m, clock = make_monitor(tmp_path, window_s=0.2)
    m.update()
    busy = 0
    for step in range(1, 6):  # fully busy from now on
        clock.t = 0.1 * step
        busy += 10
        write_tree(tmp_path, [(busy, 100), (busy, 100)], own_ticks=0, running=1)
        s = m.update()
    assert s.other_cpu == pytest.approx(1.0)  # the idle start fell out of the 0.2 s window
    assert len(m._history) <= 4


def test_missing_optional_files_read_as_none(tmp_path):
    write_tree(tmp_path, [(0, 100)], own_ticks=0, running=1)
    import shutil

    shutil.rmtree(tmp_path / "sys")
    m, _ = make_monitor(tmp_path)
    s = m.update()
    assert s.cpu_freq_mhz is None and s.gpu_load is None and s.gpu_freq_mhz is None
    assert s.features()[2] == 0.0


def test_procfs_source_without_proc_is_a_clear_error(tmp_path):
    with pytest.raises(EdgeinfError, match="proc/stat"):
        Monitor(MonitorConfig(root=str(tmp_path), source="procfs"))
    with pytest.raises(EdgeinfError):
        MonitorConfig(rate_hz=0)


def test_board_profile_paths():
    class Sysfs:
        gpu_load = ("/a/load",)
        gpu_freq = ("/a/freq",)

    class Board:
        sysfs = Sysfs()

    assert gpu_paths_from_board(Board()) == {"load": ["/a/load"], "freq": ["/a/freq"]}
    assert gpu_paths_from_board(None) == {}


def _monitor_threads():
    return [t for t in threading.enumerate() if t.name == "edgeinf-monitor"]


def test_background_thread_samples_and_stops_cleanly():
    before = len(_monitor_threads())
    with Monitor(MonitorConfig(rate_hz=200)) as m:
        deadline = time.monotonic() + 5.0
        while m.samples < 4 and time.monotonic() < deadline:
            time.sleep(0.005)
        s = m.snapshot
        assert m.samples >= 4 and len(_monitor_threads()) == before + 1
    assert len(_monitor_threads()) == before and not m.running
    assert 0.0 <= s.other_cpu <= 1.0 and len(s.per_core) == os.cpu_count() and s.mem_available_mb > 0


def test_psutil_source_agrees_with_procfs_on_this_host():
    ps = Monitor(MonitorConfig(source="psutil")).update()
    pf = Monitor(MonitorConfig(source="procfs")).update()
    assert len(ps.per_core) == len(pf.per_core)
    assert ps.mem_available_mb == pytest.approx(pf.mem_available_mb, rel=0.2)


def test_a_runtime_in_a_call_tells_the_monitor_its_threads_are_its_own(tmp_path):
    """The run queue counts the runtime's own inference threads only while a call runs (the
    runtime's lock is held), read by the monitor at its sample: the call writes nothing."""
    from _runtime_fakes import SPEC, FakeClock, fake_executor, table

    from edgeinf.runtime.runtime import Runtime

    write_tree(tmp_path, [(0, 100), (0, 100)], own_ticks=0, running=4)
    m, clock = make_monitor(tmp_path)
    m.update()
    rt = Runtime(table(), fake_executor(FakeClock(), m), "lut", monitor=m, clock=FakeClock())
    m.stop()  # the runtime started its sampling thread: the test takes every sample itself
    try:
        rt.set_session_threads(2)
        clock.t = 0.1
        assert m.update().runnable_per_core == pytest.approx((4 - 1) / 2)  # between calls: all 3 are others'
        with rt._lock:  # what a call holds while it runs
            clock.t = 0.2
            s = m.update()
        # the run queue averages the last 3 samples: 3, 3 others, then 1 (2 of the 4 are ours)
        assert s.runnable_per_core == pytest.approx((3 + 3 + (4 - 2 - 1)) / 3 / 2)
        rt.infer(np.zeros([d or 1 for d in SPEC.shape], SPEC.dtype), 5.0)
        assert m.busy_threads == 0  # nothing written by the call
    finally:
        rt.close()
    assert not m._busy_sources  # closing the runtime unregisters it
