"""``edgeinf boards list | detect | show NAME``: the known board profiles and which one this is."""
from __future__ import annotations

import argparse
from typing import Any

from edgeinf.cli.base import Tool


def _add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object to stdout")


class BoardsTool(Tool):
    """List board profiles, detect the board this runs on, show one profile."""

    name = "boards"
    help = "list board profiles, detect this board (with live power mode, clocks, temperatures), show a profile"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        subs = parser.add_subparsers(dest="boards_cmd", metavar="COMMAND", required=True)
        p_list = subs.add_parser("list", help="list the shipped board profiles", description="List the shipped board profiles.")
        _add_json(p_list)
        p_detect = subs.add_parser("detect", help="name the board this runs on and read its live state",
                                   description="Name the board this runs on and read its power mode, clocks, temperatures and power rails.")
        p_detect.add_argument("--root", default="/", metavar="DIR",
                              help="read /proc, /sys and /etc below DIR instead of / (for fake trees in tests)")
        _add_json(p_detect)
        p_show = subs.add_parser("show", help="show one board profile", description="Show every field of one board profile.")
        p_show.add_argument("board", metavar="NAME", help="profile name (see `edgeinf boards list`) or a .toml path")
        _add_json(p_show)

    def run(self, args: argparse.Namespace) -> int:
        return {"list": self._list, "detect": self._detect, "show": self._show}[args.boards_cmd](args)

    def _list(self, args: argparse.Namespace) -> int:
        from edgeinf.boards import all_profiles

        rows = [{"name": p.name, "display_name": p.display_name, "family": p.family, "soc": p.soc,
                 "cpu_cores": p.cpu_cores, "gpu_compute_capability": p.gpu_compute_capability,
                 "memory_gb": p.memory_gb, "jetpack": p.software.jetpack} for p in all_profiles()]
        if args.json:
            self.print_json({"boards": rows})
            return 0
        print(f"{'NAME':<22} {'SOC':<26} {'CORES':>5} {'CC':>5} {'MEM GB':>6}  JETPACK")
        for r in rows:
            cores = r["cpu_cores"] if r["cpu_cores"] is not None else "live"
            print(f"{r['name']:<22} {r['soc']:<26} {cores!s:>5} {r['gpu_compute_capability'] or '-':>5} "
                  f"{_fmt(r['memory_gb']):>6}  {r['jetpack'] or '-'}")
        return 0

    def _detect(self, args: argparse.Namespace) -> int:
        from edgeinf.boards import detect, snapshot

        found = detect(args.root)
        result = {**found.to_dict(), "live": snapshot(found.profile, args.root)}
        if args.json:
            self.print_json(result)
            return 0
        _print_detection(result)
        return 0

    def _show(self, args: argparse.Namespace) -> int:
        from edgeinf.boards import load_board_profile

        profile = load_board_profile(args.board)
        if args.json:
            self.print_json(profile.to_dict())
            return 0
        _print_profile(profile.to_dict())
        return 0


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _print_detection(result: dict[str, Any]) -> None:
    host, live = result["host"], result["live"]
    print(f"board:       {result['board']} ({result['display_name'] or 'no profile matches'}; matched by {result['matched_by']})")
    print(f"cpu:         {host['cpu_model'] or '-'} ({host['machine']})")
    print(f"cores:       {_fmt(host['cores_logical'])} logical, {_fmt(host['cores_physical'])} physical, "
          f"{_fmt(host['cores_usable'])} usable by this process")
    print(f"memory:      {_fmt(host['memory_gb'])} GB")
    if host["dt_model"]:
        print(f"model:       {host['dt_model']}")
    if host["l4t"]:
        print(f"L4T:         {host['l4t']}")
    mode = live["power_mode"]
    if mode:
        mode_text = f"{mode['id']} ({mode['name']})"
    else:
        mode_text = "unreadable" if result["family"] in ("jetson", None) else "n/a (no nvpmodel)"
    print(f"power mode:  {mode_text}")
    clocks = live["clocks"] or {}
    cpu = clocks.get("cpu_mhz") or []
    print(f"cpu clocks:  {', '.join(f'{c:g}' for c in cpu) + ' MHz' if cpu else 'unreadable'}")
    if clocks.get("gpu_mhz") is not None:
        print(f"gpu clock:   {clocks['gpu_mhz']:g} MHz, load {_fmt(live['gpu_load_pct'])} %")
    temps = live["temperatures_c"]
    print(f"temperature: {', '.join(f'{k} {v:g} C' for k, v in temps.items()) if temps else 'unreadable'}")
    for label, rail in live["power_rails"].items():
        print(f"rail:        {label} {rail['power_mw']:g} mW")


def _print_profile(d: dict[str, Any]) -> None:
    print(f"{d['display_name']} [{d['name']}]")
    for key in ("family", "soc", "cpu_arch", "cpu_model", "cpu_cores", "gpu", "gpu_compute_capability",
                "memory_gb", "memory_type", "memory_bandwidth_gbs"):
        print(f"  {key:<22} {_fmt(d[key])}")
    print(f"  {'backends':<22} {', '.join(d['backends'])}")
    sw = ", ".join(f"{k} {v}" for k, v in d["software"].items() if v)
    print(f"  {'software':<22} {sw or '-'}")
    for m in d["power_modes"]:
        watts = f"{m['watts']:g} W" if m["watts"] else "uncapped"
        print(f"  power mode {m['id']:<11} {m['name']} ({watts}){' default' if m['default'] else ''}")
    for key, value in d["sysfs"].items():
        if value:
            print(f"  sysfs.{key:<16} {', '.join(value) if isinstance(value, (list, tuple)) else value}")
    for note in d["notes"]:
        print(f"  note: {note}")
