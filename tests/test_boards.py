"""Board profiles load and validate; detection and live readers work on fake /proc, /sys, /etc trees."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from edgeinf.boards import (
    BoardProfileError,
    all_profiles,
    detect,
    load_board_profile,
    profile_names,
    read_clocks,
    read_gpu_load,
    read_power_mode,
    read_power_rails,
    read_temperatures,
    snapshot,
)
from edgeinf.boards.board_profile import profile_from_dict
from edgeinf.cli import build_parser
from edgeinf.cli.boards import BoardsTool

ARM_CPUINFO = "processor\t: 0\nBogoMIPS\t: 62.50\nCPU implementer\t: 0x41\nCPU part\t: 0xd42\n\n" * 1
X86_CPUINFO = "".join(
    f"processor\t: {i}\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz\n"
    f"physical id\t: 0\nsiblings\t: 4\ncore id\t\t: {i // 2}\ncpu MHz\t\t: {3192 + i}.000\nflags\t\t: fpu sse2\n\n"
    for i in range(4))

# (device-tree model, compatible entries, L4T release line or None, MemTotal kB) -> expected profile.
# Strings as the boards' own device trees spell them, written here independently of the profiles.
TREES = {
    "jetson-nano": ("NVIDIA Jetson Nano Developer Kit", ["nvidia,p3450-0000", "nvidia,tegra210"],
                    "# R32 (release), REVISION: 7.4, GCID: 33514132, BOARD: t210ref, EABI: aarch64", 4051032),
    "jetson-tx2": ("quill", ["nvidia,p2771-0000-500", "nvidia,p2771-0000", "nvidia,tegra186"],
                   "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t186ref, EABI: aarch64", 8038232),
    "jetson-xavier-nx": ("NVIDIA Jetson Xavier NX Developer Kit",
                         ["nvidia,p3509-0000+p3668-0001", "nvidia,p3668-0001", "nvidia,tegra194"],
                         "# R35 (release), REVISION: 5.0, GCID: 35550185, BOARD: t186ref, EABI: aarch64", 7782432),
    "jetson-agx-xavier": ("Jetson-AGX", ["nvidia,p2972-0000", "nvidia,galen", "nvidia,tegra194"],
                          "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64", 32153372),
    "jetson-orin-nano-8gb": ("NVIDIA Jetson Orin Nano Developer Kit",
                             ["nvidia,p3768-0000+p3767-0005", "nvidia,p3767-0005", "nvidia,tegra234"],
                             "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64", 7802548),
    "jetson-orin-nano-4gb": ("NVIDIA Jetson Orin Nano Engineering Reference Developer Kit",
                             ["nvidia,p3768-0000+p3767-0004", "nvidia,p3767-0004", "nvidia,tegra234"],
                             "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64", 3735112),
    "jetson-orin-nx-16gb": ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit",
                            ["nvidia,p3768-0000+p3767-0000", "nvidia,p3767-0000", "nvidia,tegra234"],
                            "# R36 (release), REVISION: 3.0, GCID: 36923193, BOARD: generic, EABI: aarch64", 15956880),
    "jetson-orin-nx-8gb": ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit",
                           ["nvidia,p3768-0000+p3767-0001", "nvidia,p3767-0001", "nvidia,tegra234"],
                           "# R36 (release), REVISION: 3.0, GCID: 36923193, BOARD: generic, EABI: aarch64", 7802548),
    "jetson-agx-orin-32gb": ("Jetson AGX Orin", ["nvidia,p3737-0000+p3701-0004", "nvidia,p3701-0004", "nvidia,tegra234"],
                             "# R35 (release), REVISION: 2.1, GCID: 32413640, BOARD: t186ref, EABI: aarch64", 31001508),
    "jetson-agx-orin-64gb": ("NVIDIA Jetson AGX Orin Developer Kit",
                             ["nvidia,p3737-0000+p3701-0005", "nvidia,p3701-0005", "nvidia,tegra234"],
                             "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64", 64335836),
    "jetson-thor": ("NVIDIA Jetson AGX Thor Developer Kit",
                    ["nvidia,p3971-0000+p3834-0008", "nvidia,p3834-0008", "nvidia,tegra264"],
                    "# R38 (release), REVISION: 2.0, GCID: 41844464, BOARD: generic, EABI: aarch64", 128300000),
    "raspberry-pi-4": ("Raspberry Pi 4 Model B Rev 1.5", ["raspberrypi,4-model-b", "brcm,bcm2711"], None, 3884164),
    "raspberry-pi-5": ("Raspberry Pi 5 Model B Rev 1.0", ["raspberrypi,5-model-b", "brcm,bcm2712"], None, 8245360),
}


def write(root: Path, rel: str, text: str | bytes) -> Path:
    path = root / rel.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def fake_tree(root: Path, model: str | None, compatible: list[str], release: str | None, mem_kb: int,
              cpuinfo: str = ARM_CPUINFO) -> Path:
    if model is not None:
        write(root, "/proc/device-tree/model", model.encode() + b"\x00")
    if compatible:
        write(root, "/proc/device-tree/compatible", b"".join(c.encode() + b"\x00" for c in compatible))
    if release:
        write(root, "/etc/nv_tegra_release", release + ", DATE: Wed Jan  8 01:49:37 UTC 2025\n")
    write(root, "/proc/meminfo", f"MemTotal:       {mem_kb} kB\nMemFree:         1000 kB\n")
    write(root, "/proc/cpuinfo", cpuinfo)
    return root


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    args = build_parser({"boards": BoardsTool()}).parse_args(["boards", *argv])
    code = args._tool.run(args)
    return code, capsys.readouterr().out


# -- profiles --------------------------------------------------------------------------------
def test_every_required_board_has_a_profile():
    wanted = {"jetson-nano", "jetson-tx2", "jetson-xavier-nx", "jetson-agx-xavier", "jetson-orin-nano-4gb",
              "jetson-orin-nano-8gb", "jetson-orin-nx-8gb", "jetson-orin-nx-16gb", "jetson-agx-orin-32gb",
              "jetson-agx-orin-64gb", "jetson-thor", "raspberry-pi-4", "raspberry-pi-5", "x86-64"}
    assert wanted <= set(profile_names())


@pytest.mark.parametrize("name", profile_names())
def test_profile_loads_and_is_consistent(name):
    p = load_board_profile(name)
    assert p.name == name
    json.dumps(p.to_dict())  # JSON-ready
    if p.family == "jetson":
        # SoC generation -> compute capability, JetPack major -> CUDA major (public NVIDIA tables)
        cc = {"T210": "5.3", "T186": "6.2", "T194": "7.2", "T234": "8.7", "T264": "11.0"}
        soc = next(k for k in cc if k in p.soc)
        assert p.gpu_compute_capability == cc[soc]
        cuda_major = {"4": "10", "5": "11", "6": "12", "7": "13"}[p.software.jetpack.split(".")[0]]
        assert p.software.cuda.split(".")[0] == cuda_major
        assert p.power_modes and p.sysfs.nvpmodel_status and p.backends[0] == "tensorrt"
        assert p.memory_bandwidth_gbs and p.cpu_cores
    assert all(path.startswith("/") for paths in (p.sysfs.thermal, p.sysfs.power_rails) for path in paths)


def test_orin_sizes_differ_where_the_modules_differ():
    nano4, nano8 = load_board_profile("jetson-orin-nano-4gb"), load_board_profile("jetson-orin-nano-8gb")
    agx32, agx64 = load_board_profile("jetson-agx-orin-32gb"), load_board_profile("jetson-agx-orin-64gb")
    assert (nano4.memory_gb, nano8.memory_gb, agx32.cpu_cores, agx64.cpu_cores) == (4, 8, 8, 12)
    assert nano4.memory_bandwidth_gbs == pytest.approx(nano8.memory_bandwidth_gbs / 2)


def _valid() -> dict:
    return {"name": "my-board", "display_name": "My board", "family": "jetson", "soc": "Orin (T234)",
            "cpu": {"arch": "aarch64", "model": "A78AE", "cores": 6}, "gpu": {"compute_capability": "8.7"},
            "memory": {"size_gb": 8}, "software": {"jetpack": "6.2"},
            "power_modes": [{"id": 0, "name": "15W", "watts": 15, "default": True}, {"id": 1, "name": "7W", "watts": 7}]}


@pytest.mark.parametrize("mutate, words", [
    (lambda d: d["gpu"].update(compute_capability="sm87"), "compute_capability"),
    (lambda d: d["power_modes"].append({"id": 1, "name": "again"}), "repeat"),
    (lambda d: d["power_modes"][1].update(default=True), "default"),
    (lambda d: d["cpu"].update(cores=0), "cpu.cores"),
    (lambda d: d.update(family="phone"), "family"),
    (lambda d: d.update(backends={"preference": ["magic"]}), "backends"),
    (lambda d: d.pop("soc"), "soc"),
    (lambda d: d.update(name="My Board"), "lower-case"),
    (lambda d: d.update(sysfs={"thermal": ["relative/path"]}), "absolute"),
    (lambda d: d["power_modes"][0].update(watts=-3), "watts"),
    (lambda d: d.update(unknown_table={"x": 1}) or d["cpu"].update(speed=3), "unexpected"),
])
def test_invalid_profiles_are_refused_with_a_reason(mutate, words):
    data = _valid()
    profile_from_dict(data)  # the unmutated one is fine
    mutate(data)
    with pytest.raises(BoardProfileError, match=words):
        profile_from_dict(data)


def test_load_profile_errors(tmp_path):
    with pytest.raises(BoardProfileError, match="boards list"):
        load_board_profile("jetson-nano-9000")
    bad = write(tmp_path, "x.toml", "name = [unclosed")
    with pytest.raises(BoardProfileError, match="not valid TOML"):
        load_board_profile(str(bad))


# -- detection -------------------------------------------------------------------------------
@pytest.mark.parametrize("expected", sorted(TREES))
def test_detect_names_each_fake_board(tmp_path, expected):
    model, compatible, release, mem_kb = TREES[expected]
    found = detect(fake_tree(tmp_path, model, compatible, release, mem_kb))
    assert found.name == expected
    assert found.matched_by == "compatible"
    if release:
        r, rev = release.split("R")[1].split(" ")[0], release.split("REVISION: ")[1].split(",")[0]
        assert found.host.l4t == f"{r}.{rev}"


def test_detect_falls_back_to_model_then_soc_and_memory(tmp_path):
    found = detect(fake_tree(tmp_path / "a", "NVIDIA Jetson Xavier NX Developer Kit", [], None, 7782432))
    assert (found.name, found.matched_by) == ("jetson-xavier-nx", "model")
    found = detect(fake_tree(tmp_path / "b", "NVIDIA Jetson Orin Nano Developer Kit", [], None, 3735112))
    assert (found.name, found.matched_by) == ("jetson-orin-nano-4gb", "model")
    found = detect(fake_tree(tmp_path / "c", None, ["nvidia,tegra234"], None, 64335836))
    assert (found.name, found.matched_by) == ("jetson-agx-orin-64gb", "soc_compatible")
    found = detect(fake_tree(tmp_path / "d", None, ["nvidia,tegra234"], None, 30000000))
    assert found.name == "jetson-agx-orin-32gb"


def test_detect_x86_host_from_cpuinfo(tmp_path):
    found = detect(fake_tree(tmp_path, None, [], None, 16318480, cpuinfo=X86_CPUINFO))
    assert (found.name, found.matched_by) == ("x86-64", "machine")
    assert found.host.cpu_model.startswith("Intel(R) Core(TM) i7-8700")
    assert (found.host.cores_logical, found.host.cores_physical) == (4, 2)
    assert found.host.memory_gb == pytest.approx(16318480 / 1024**2, abs=0.01)
    assert read_clocks(found.profile, tmp_path)["cpu_mhz"] == [3192.0, 3193.0, 3194.0, 3195.0]  # no cpufreq: cpuinfo


def test_unknown_arm_board_is_unknown(tmp_path):
    found = detect(fake_tree(tmp_path, "Some Other SBC", ["vendor,sbc", "rockchip,rk3588"], None, 4000000))
    assert found.profile is None and found.name == "unknown"


def test_detect_this_machine_counts_real_cores():
    found = detect()
    assert found.host.cores_logical == os.cpu_count()
    if found.host.machine == "x86_64" and not Path("/etc/nv_tegra_release").exists():
        assert found.name == "x86-64"


# -- live readers ------------------------------------------------------------------------------
def jetson_sysfs(root: Path) -> Path:
    write(root, "/var/lib/nvpmodel/status", "pmode:0002 fmode:quiet\n")
    write(root, "/etc/nvpmodel.conf", "< POWER_MODEL ID=0 NAME=15W >\nCPU_ONLINE CORE_0 1\n"
                                      "< POWER_MODEL ID=1 NAME=25W >\n< POWER_MODEL ID=2 NAME=MAXN_SUPER >\n")
    for cpu, khz in enumerate((1510400, 1510400, 729600, 115200)):
        write(root, f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_cur_freq", f"{khz}\n")
    gpu = "/sys/devices/platform/bus@0/17000000.gpu"
    write(root, f"{gpu}/devfreq/17000000.gpu/cur_freq", "306000000\n")
    write(root, f"{gpu}/load", "537\n")
    for i, (kind, milli) in enumerate((("cpu-thermal", 45500), ("gpu-thermal", 43250))):
        write(root, f"/sys/devices/virtual/thermal/thermal_zone{i}/type", kind + "\n")
        write(root, f"/sys/devices/virtual/thermal/thermal_zone{i}/temp", f"{milli}\n")
    hw = "/sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
    for n, (label, mv, ma) in enumerate((("VDD_IN", 5080, 1200), ("VDD_CPU_GPU_CV", 5072, 240), ("VDD_SOC", 5080, 300)), 1):
        write(root, f"{hw}/in{n}_label", label + "\n")
        write(root, f"{hw}/in{n}_input", f"{mv}\n")
        write(root, f"{hw}/curr{n}_input", f"{ma}\n")
    write(root, f"{hw}/in7_label", "sum of shunt voltages\n")
    write(root, f"{hw}/in7_input", "1\n")
    write(root, f"{hw}/curr7_input", "1\n")
    return root


def test_live_readers_on_fake_orin(tmp_path):
    root, p = jetson_sysfs(tmp_path), load_board_profile("jetson-orin-nano-8gb")
    assert read_power_mode(p, root) == {"id": 2, "name": "MAXN_SUPER", "watts": None, "source": "nvpmodel_conf"}
    assert read_clocks(p, root) == {"cpu_mhz": [1510.4, 1510.4, 729.6, 115.2], "gpu_mhz": 306.0}
    assert read_temperatures(p, root) == {"cpu-thermal": 45.5, "gpu-thermal": 43.25}
    assert read_gpu_load(p, root) == 53.7
    rails = read_power_rails(p, root)
    assert set(rails) == {"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}
    assert rails["VDD_IN"]["power_mw"] == pytest.approx(5080 * 1200 / 1000)


def test_power_mode_name_falls_back_to_the_profile(tmp_path):
    p = load_board_profile("jetson-orin-nano-8gb")
    write(tmp_path, "/var/lib/nvpmodel/status", "pmode:0000\n")
    assert read_power_mode(p, tmp_path) == {"id": 0, "name": "15W", "watts": 15, "source": "profile"}
    assert read_power_mode(p, tmp_path / "empty") is None


def test_legacy_iio_rails_on_fake_nano(tmp_path):
    p = load_board_profile("jetson-nano")
    d = "/sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0"
    for n, (name, mw) in enumerate((("POM_5V_IN", 2345), ("POM_5V_GPU", 40), ("POM_5V_CPU", 400))):
        write(tmp_path, f"{d}/rail_name_{n}", name + "\n")
        write(tmp_path, f"{d}/in_power{n}_input", f"{mw}\n")
    rails = read_power_rails(p, tmp_path)
    assert {k: v["power_mw"] for k, v in rails.items()} == {"POM_5V_IN": 2345, "POM_5V_GPU": 40, "POM_5V_CPU": 400}


def test_snapshot_of_a_bare_tree_is_empty_not_an_error(tmp_path):
    snap = snapshot(load_board_profile("x86-64"), tmp_path)
    assert snap["power_mode"] is None and snap["temperatures_c"] == {} and snap["power_rails"] == {}
    assert snapshot(None, tmp_path)["clocks"] is None


# -- CLI ---------------------------------------------------------------------------------------
def test_cli_list_and_show(capsys):
    code, out = run_cli(capsys, "list", "--json")
    assert code == 0 and len(json.loads(out)["boards"]) == len(profile_names())
    code, out = run_cli(capsys, "show", "jetson-agx-orin-64gb")
    assert code == 0 and "Neoverse" not in out and "12" in out and "MAXN" in out


def test_cli_detect_this_machine(capsys):
    code, out = run_cli(capsys, "detect", "--json")
    result = json.loads(out)
    assert code == 0 and result["host"]["cores_logical"] == os.cpu_count()
    if result["host"]["machine"] == "x86_64" and not Path("/etc/nv_tegra_release").exists():
        assert result["board"] == "x86-64"
    code, out = run_cli(capsys, "detect")
    assert f"cores:       {os.cpu_count()} logical" in out


def test_cli_detect_fake_jetson_reads_live_state(tmp_path, capsys):
    model, compatible, release, mem_kb = TREES["jetson-orin-nano-8gb"]
    root = jetson_sysfs(fake_tree(tmp_path, model, compatible, release, mem_kb))
    code, out = run_cli(capsys, "detect", "--root", str(root))
    assert code == 0
    assert "jetson-orin-nano-8gb" in out and "2 (MAXN_SUPER)" in out and "VDD_IN 6096 mW" in out


def test_profiles_are_frozen():
    p = all_profiles()[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.name = "x"  # type: ignore[misc]
