"""``edgeinf inspect PKG``: verify a package (schema, every sha256) and print its manifest as tables."""
from __future__ import annotations

import argparse
from typing import Any

from edgeinf.cli.base import JsonOutput, Tool


class InspectTool(Tool):
    """Verify a package and show its model, artifacts (form, size, error, real low-bit ops) and branches."""

    name = "inspect"
    help = "verify a package (schema + sha256 of every artifact) and print its manifest as tables"
    option_groups = (JsonOutput,)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("package", metavar="PKG", help="package directory (written by edgeinf export)")
        parser.add_argument("--all-branches", action="store_true", help="list every branch, not only Pareto / fused ones")

    def run(self, args: argparse.Namespace) -> int:
        from edgeinf.package import load_package

        pkg = load_package(args.package)  # raises PackageError (one line) on any problem
        if args.json:
            self.print_json({"verified": True, "manifest": pkg.manifest})
            return 0
        _print_header(pkg)
        _print_footprint(pkg)
        _print_artifacts(pkg.artifacts)
        _print_branches(pkg.branches, args.all_branches, pkg)
        _print_build_record(pkg.manifest)
        trained = _print_schedulers(pkg)
        print(f"verified: {len(pkg.artifacts)} artifacts{trained}, schema {pkg.manifest['schema_version']}, "
              "every sha256 matches")
        return 0


def _numbers(obj: Any) -> dict[str, float]:
    """The numeric entries of a dict from the manifest (anything else is left out)."""
    if not isinstance(obj, dict):
        return {}
    return {str(k): float(v) for k, v in obj.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _print_build_record(manifest: dict[str, Any]) -> None:
    """The build's stage timings and fp32 torch accuracy (packages made by edgeinf build)."""
    rec = manifest.get("build_record")
    if not isinstance(rec, dict):
        return
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in _numbers(rec.get("stages_s")).items())
    acc = ", ".join(f"{k} {v:.4f}" for k, v in _numbers(rec.get("torch_accuracy")).items())
    data = rec.get("data") if isinstance(rec.get("data"), dict) else {}
    resumed = rec.get("resumed") if isinstance(rec.get("resumed"), list) else []
    print()
    print(f"build     data {data.get('source')} {data.get('sizes')}; fp32 torch accuracy {acc}")
    print(f"stages    {stages}{' (resumed: ' + ', '.join(map(str, resumed)) + ')' if resumed else ''}")


def _print_schedulers(pkg) -> str:
    """The learned schedulers trained into the package, each verified as it is loaded; returns
    the summary's extra words."""
    from edgeinf.learned.store import SCHEDULERS, load_trained

    entries = pkg.manifest.get(SCHEDULERS) or {}
    if not entries:
        return ""
    print()
    print(f"{'SCHEDULER':<12} {'KB':>8}  {'PATHS':>5}  FILE")
    for kind, entry in sorted(entries.items()):
        trained = load_trained(pkg, kind)  # raises PackageError (one line) on a missing or tampered file
        paths = len(trained.pathset) if hasattr(trained, "pathset") else "-"
        print(f"{kind:<12} {entry['size_bytes'] / 1024:>8.1f}  {paths:>5}  {entry['path']}")
    return f" and {len(entries)} trained scheduler{'s' if len(entries) > 1 else ''}"


def _print_header(pkg) -> None:
    m, build = pkg.manifest, pkg.manifest["build"]
    inp = m["model"].get("input", {})
    versions = ", ".join(f"{k} {v}" for k, v in build.get("versions", {}).items())
    print(f"==== package {pkg.root}")
    print(f"model     {m['model'].get('name')} ({m['model'].get('kind')}), input {inp.get('name')} {inp.get('shape')} {inp.get('dtype')}")
    print(f"blocks    {len(m['blocks'])} (skippable: {[b['index'] for b in m['blocks'] if b.get('skippable')]}), "
          f"exits {m['exits']}, bit levels {m['bit_levels']}")
    print(f"built     {build.get('created_utc')} on {build.get('host')} ({build.get('machine')}), edgeinf {build.get('edgeinf')}")
    print(f"versions  {versions}")
    print(f"command   {build.get('command')}")


def footprint(pkg) -> dict[str, int]:
    """Bytes on disk (every file of the package) and the weight bytes a runtime holds with every
    graph's session open: the weights files (shared, counted once) plus each graph's own bytes."""
    disk = sum(f.stat().st_size for f in pkg.root.rglob("*") if f.is_file())
    arts = pkg.artifacts
    weights = sum(a["size_bytes"] for a in arts if a["role"] == "weights")
    graphs = sum(a["size_bytes"] for a in arts if a["backend"] == "onnx")
    return {"disk_bytes": disk, "weights_file_bytes": weights, "graph_bytes": graphs, "resident_weight_bytes": weights + graphs}


def _print_footprint(pkg) -> None:
    f, mib = footprint(pkg), 2 ** 20
    print(f"footprint {f['disk_bytes'] / mib:.1f} MiB on disk; expected resident weights {f['resident_weight_bytes'] / mib:.1f} MiB "
          f"(shared weights files {f['weights_file_bytes'] / mib:.1f} MiB + ONNX graphs {f['graph_bytes'] / mib:.1f} MiB, "
          "every session open; sessions open on demand)")


def _fmt_err(entry: dict[str, Any]) -> str:
    if entry.get("rel_rms_error") is not None:  # w8a8: relative RMS error against the fp32 block
        return f"{entry['rel_rms_error']:.1e}/{entry.get('tolerance') or 0:.0e}r"
    err = entry.get("max_abs_error")
    return "-" if err is None else f"{err:.1e}/{entry.get('tolerance') or 0:.0e}"


def _lowbit(entry: dict[str, Any]) -> str:
    """The kernel onnxruntime runs (read from its optimized graph at export), else the weight counts."""
    if entry.get("kernel"):
        return entry["kernel"]
    real, sim = len(entry.get("real_lowbit", [])), len(entry.get("simulated", []))
    if not real and not sim:
        return "-"
    return f"{real} real, {sim} sim"


def _print_artifacts(arts: list[dict[str, Any]]) -> None:
    print()
    print(f"{'ARTIFACT':<34} {'ROLE':<8} {'FORM':<7} {'KB':>8} {'ERR/TOL':>15} {'ACC':>3} {'KERNEL':<16} PATH")
    for a in arts:
        acc = a.get("accuracy_level", "-")
        print(f"{a['key'][:34]:<34} {a['role']:<8} {a.get('form', '-'):<7} {a['size_bytes'] / 1024:>8.1f} "
              f"{_fmt_err(a):>15} {acc!s:>3} {_lowbit(a):<16} {a['path']}")


def _host_backend(pkg) -> str | None:
    """The backend the build host timed the branches with (the profile's ``latency.backend``), or None."""
    import json

    if pkg is None or not pkg.has("profile"):
        return None
    latency = json.loads(pkg.path("profile").read_text()).get("latency") or {}
    return latency.get("backend") if latency.get("measured") else None


def _latency_columns(pkg) -> tuple[str, str, dict[str, float]]:
    """(host column title, device column title, branch id -> device p50 ms): where each latency was measured.

    The host column is the build's torch timing (the profile); the device column is the newest
    table ``edgeinf profile`` wrote on a device (its host and backend name it)."""
    from edgeinf.profile_format import latency_p50_ms
    from edgeinf.runtime import DEVICE_LATENCY

    manifest = pkg.manifest if pkg is not None else {}
    backend = _host_backend(pkg)
    host_title = f"HOST MS ({backend}, build)" if backend else "HOST MS (not timed)"
    entries = sorted((manifest.get(DEVICE_LATENCY) or {}).items(), key=lambda kv: kv[1].get("measured_utc", ""))
    if not entries:
        return host_title, "DEVICE MS (edgeinf profile: none yet)", {}
    key, entry = entries[-1]
    measured = {bid: latency_p50_ms(v) for bid, v in entry.get("branches", {}).items()}
    return host_title, f"DEVICE MS ({key})", {k: v for k, v in measured.items() if v is not None}


def _fmt_ms(value: float | None) -> str:
    return f"{value:.3f}" if value is not None else "-"


def _print_branches(rows: list[dict[str, Any]], show_all: bool, pkg=None) -> None:
    from edgeinf.profile_format import latency_p50_ms

    shown = [r for r in rows if show_all or r.get("pareto") or r.get("fused")]
    if not rows:
        return
    host_title, device_title, device = _latency_columns(pkg)
    print()
    print(f"branches: {len(rows)} in the table, {len(shown)} shown (Pareto or fused; --all-branches for all); "
          f"accuracy from the build's profile")
    print(f"{'BRANCH':<34} {'ACC':>6} {'MMACS':>8} {'BITOPS':>8} {host_title:>22} {device_title:>30} {'PARETO':>6}  FUSED")
    for r in shown:
        host = latency_p50_ms(r.get("latency_ms"))
        macs = r.get("macs")
        print(f"{r['id'][:34]:<34} {r.get('accuracy', float('nan')):>6.3f} {(macs or 0) / 1e6:>8.2f} "
              f"{r.get('bitops_norm', float('nan')):>8.3f} {_fmt_ms(host):>22} {_fmt_ms(device.get(r['id'])):>30} "
              f"{'yes' if r.get('pareto') else '':>6}  {r.get('fused') or ''}")
