"""``edgeinf run PKG`` (budgeted inference on inputs) and ``edgeinf profile PKG`` (measure branches here)."""
from __future__ import annotations

import argparse
from pathlib import Path

from edgeinf.cli.base import JsonOutput, OptionGroup, Tool, nonneg_int, positive_float, positive_int
from edgeinf.errors import EdgeinfError


class RuntimeOptions(OptionGroup):
    """Options for loading a package into the runtime."""

    title = "Runtime"

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group(self.title)
        g.add_argument("package", metavar="PKG", help="package directory (from edgeinf export / edgeinf demo)")
        g.add_argument("--backend", default=None,
                       help="onnxruntime (CPU, default) | onnxruntime-cuda | onnxruntime-tensorrt | tensorrt")
        g.add_argument("--threads", type=positive_int, default=None, help="ONNX Runtime intra-op threads (default: ORT's)")
        g.add_argument("--board", default=None, help="board profile name (GPU sysfs paths, backend preference)")


def backend_options(args: argparse.Namespace) -> dict:
    return {} if args.threads is None else {"intra_op_threads": args.threads}


def load_npy(path: str, what: str = "input") -> "np.ndarray":  # noqa: F821
    """A numeric, non-empty array from a .npy file (no pickle), or a one-line EdgeinfError."""
    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise EdgeinfError(f"{what} file not found: {p}")
    try:
        x = np.load(p, allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError, OSError, EOFError, zipfile errors... for a bad file
        raise EdgeinfError(f"{p} is not a readable .npy array ({type(exc).__name__}: {str(exc)[:120]}); "
                           "save it with numpy.save") from None
    if not isinstance(x, np.ndarray):
        x.close()
        raise EdgeinfError(f"{p} is an .npz archive, not one .npy array; save the {what} with numpy.save")
    if x.dtype.kind not in "biuf":
        raise EdgeinfError(f"{p} holds {x.dtype} values; the {what} must be numbers")
    if x.ndim == 0 or x.size == 0:
        raise EdgeinfError(f"{p} is empty (shape {x.shape}); it needs one {what} per row")
    return x


def load_inputs(path: str, spec) -> "np.ndarray":  # noqa: F821
    """Inputs from a .npy file, one sample per row; a single sample without batch dim gets one."""
    import numpy as np

    p = Path(path)
    x = load_npy(path, "input")
    if spec is not None and x.ndim == len(spec.shape) - 1:
        x = x[None]
    if spec is not None and str(x.dtype) != spec.dtype and np.issubdtype(x.dtype, np.floating):
        raise EdgeinfError(f"{p} holds {x.dtype}; the package wants {spec.dtype}: save x.astype(np.{spec.dtype})")
    return x


def load_labels(path: str | None, n_inputs: int) -> "np.ndarray | None":  # noqa: F821
    """Integer class labels, exactly one per input row, or a one-line EdgeinfError."""
    import numpy as np

    if path is None:
        return None
    y = load_npy(path, "label")
    if y.dtype.kind == "f":
        if not (np.isfinite(y).all() and np.all(y == np.round(y))):
            raise EdgeinfError(f"{path} holds non-integer labels; labels are class indices")
        y = y.astype(np.int64)
    y = y.reshape(-1) if y.ndim > 1 and y.size == y.shape[0] else y
    if y.ndim != 1 or len(y) != n_inputs:
        raise EdgeinfError(f"{path} has {y.shape[0] if y.ndim else 0} labels (shape {y.shape}) for {n_inputs} inputs; "
                           "give exactly one label per input row")
    if y.dtype.kind == "b" or (y < 0).any():
        raise EdgeinfError(f"{path} holds negative or boolean labels; labels are class indices")
    return y


def _static_branch(package: str, branch: str):
    """The static scheduler on ``branch`` (an id from edgeinf inspect, or ``full``)."""
    from edgeinf.package import load_package
    from edgeinf.runtime.schedulers import Static

    rows = load_package(package).branches
    if branch != "full":
        if branch not in {r["id"] for r in rows}:
            raise EdgeinfError(f"branch {branch!r} is not in the package; list them with edgeinf inspect PKG --all-branches")
        return Static(branch)
    n = 1 + max(max(r["blocks"]) for r in rows)
    full = [r for r in rows if r["exit"] is None and list(r["blocks"]) == list(range(n))]
    if not full:
        raise EdgeinfError("the package has no full branch (every block, final head); pass a branch id")
    return Static(max(full, key=lambda r: min(r["bits"] or [32]))["id"])


class RunTool(Tool):
    """Run inputs through a package under a latency budget and print the records."""

    name = "run"
    help = "run inputs (.npy) through a package under a latency budget, picking the branch per call"
    option_groups = (RuntimeOptions, JsonOutput)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--input", required=True, metavar="NPY", help="inputs, one sample per row (.npy)")
        parser.add_argument("--labels", default=None, metavar="NPY", help="labels (.npy) to report accuracy")
        parser.add_argument("--budget-ms", type=positive_float, required=True, help="latency budget per call in ms")
        from edgeinf.runtime.registry import scheduler_names

        parser.add_argument("--scheduler", default="lut", choices=scheduler_names(),
                            help="a registered scheduler; gates, gates-next and content load the scheduler trained "
                                 "into the package (edgeinf train-scheduler); default lut")
        parser.add_argument("--branch", default=None, metavar="ID|full",
                            help="always run this branch (the static scheduler); full = every block, the final "
                                 "head, the highest bits")
        parser.add_argument("--repeat", type=positive_int, default=1, help="passes over the inputs")
        parser.add_argument("--warm", action="store_true",
                            help="open every pickable branch's sessions at load (else each opens on its branch's first call)")
        parser.add_argument("-v", "--verbose", action="store_true",
                            help="print the load time, the first call's time and the resident memory (to stderr)")

    def run(self, args: argparse.Namespace) -> int:
        import numpy as np

        from edgeinf.runtime.runtime import Runtime

        scheduler = _static_branch(args.package, args.branch) if args.branch else args.scheduler
        with Runtime.load(args.package, backend=args.backend, scheduler=scheduler, board=args.board,
                          warm=args.warm, **backend_options(args)) as rt:
            xs = load_inputs(args.input, rt.input_spec)
            ys = load_labels(args.labels, len(xs))
            rows = []
            for _ in range(max(1, args.repeat)):
                for i in range(len(xs)):
                    y, rec = rt.infer(xs[i: i + 1], args.budget_ms, None if ys is None else ys[i: i + 1])
                    rows.append({**rec.to_dict(), "prediction": int(np.argmax(y.reshape(len(y), -1)[0]))})
                    if args.verbose and len(rows) == 1:
                        _print_startup(rt, rec)
            summary = rt.stats()
        if args.json:
            self.print_json({"summary": summary, "records": rows})
            return 0
        for r in rows[:20]:
            print(f"#{r['call']:<5} {r['branch']:<28} pred {r['predicted_ms']:8.3f} ms  took {r['measured_ms']:8.3f} ms  "
                  f"{'met ' if r['met'] else 'MISS'}  class {r['prediction']}")
        if len(rows) > 20:
            print(f"... {len(rows) - 20} more calls")
        print(format_summary(summary))
        return 0


def _print_startup(rt, first) -> None:
    """Load time, the first call and the process's resident memory, on stderr."""
    import sys

    import psutil

    rss_mib = psutil.Process().memory_info().rss / 2 ** 20
    pool = getattr(rt.executor, "pool", None)
    sessions = f", {pool.stats()['open']} sessions open" if pool is not None else ""
    print(f"load {rt.load_ms:.1f} ms, first call {first.measured_ms:.1f} ms, RSS {rss_mib:.0f} MiB{sessions}",
          file=sys.stderr)


def format_summary(s: dict) -> str:
    lat, dec = s["latency_ms"], s["decision_us"]
    acc = "" if s["accuracy"] is None else f"  accuracy {s['accuracy']:.4f}"
    return (f"{s['calls']} calls  miss rate {s['miss_rate']:.4f} ({s['misses']} misses, {s['bursts']} bursts, "
            f"longest {s['max_burst']})  p50/p95/p99 {lat['p50_ms']:.3f}/{lat['p95_ms']:.3f}/{lat['p99_ms']:.3f} ms  "
            f"decision p50/p99 {dec['p50_us']:.1f}/{dec['p99_us']:.1f} us{acc}"
            + (f"  ({s['cold_calls']} calls opened sessions first: --warm opens them at load)" if s.get("cold_calls") else ""))


class ProfileTool(Tool):
    """Measure each branch's latency on this device and write the table into the package."""

    name = "profile"
    help = "measure every branch's latency on this device and write it into the package (atomically)"
    option_groups = (RuntimeOptions, JsonOutput)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--repeat", type=positive_int, default=50, help="timed calls per branch")
        parser.add_argument("--warmup", type=nonneg_int, default=5, help="untimed calls per branch first")
        parser.add_argument("--period-ms", type=positive_float, default=None,
                            help="frame-paced: one call per period, as your application calls it (default: back to back)")
        parser.add_argument("--dry-run", action="store_true", help="measure and print, do not write the package")

    def run(self, args: argparse.Namespace) -> int:
        from edgeinf.runtime.device_profile import profile_package

        result = profile_package(args.package, args.backend, args.repeat, args.warmup, write=not args.dry_run,
                                 period_ms=args.period_ms, **backend_options(args))
        if args.json:
            self.print_json(result)
            return 0
        print(f"{'BRANCH':<32} {'P50 MS':>9} {'P95 MS':>9}")
        for bid, st in sorted(result["branches"].items(), key=lambda kv: kv[1]["p50_ms"]):
            print(f"{bid:<32} {st['p50_ms']:9.4f} {st['p95_ms']:9.4f}")
        where = "not written (--dry-run)" if args.dry_run else f"written to the package as {result['key']}"
        print(f"{len(result['branches'])} branches, backend {result['backend']}: {where}")
        return 0
