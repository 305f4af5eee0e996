"""``edgeinf oracle``: how much could any adaptive scheme gain on these states (the oracle bounds)."""
from __future__ import annotations

import argparse
import io
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgeinf import _atomic
from edgeinf.cli.base import JsonOutput, PlotOutput, Tool
from edgeinf.errors import EdgeinfError
from edgeinf.oracle import DOMINATED_POLICIES, OracleReport, analyze

RESOURCES = ("macs", "bitops", "latency_ms", "param_bytes")  # checked by edgeinf.profile_format


def parse_floats(text: str | None, flag: str) -> list[float] | None:
    """``"1,2,4"`` -> [1.0, 2.0, 4.0]; a one-line error naming the flag otherwise."""
    if text is None:
        return None
    items = [t.strip() for t in text.split(",")]
    if not text.strip() or any(t == "" for t in items):
        raise EdgeinfError(f"{flag} must be a comma-separated list of numbers, e.g. {flag} 1,2,4 (got {text!r})")
    try:
        return [float(t) for t in items]
    except ValueError:
        raise EdgeinfError(f"{flag} must be a comma-separated list of numbers, e.g. {flag} 1,2,4 (got {text!r})") from None


def _parse_number(text: str | None, flag: str, kind: type) -> Any:
    if text is None:
        return None
    try:
        return kind(text)
    except ValueError:
        raise EdgeinfError(f"{flag} must be {'an integer' if kind is int else 'a number'} (got {text!r})") from None


def load_matrix(path: str) -> np.ndarray:
    """Read a samples x states 0/1 matrix from ``.npy`` or ``.csv`` (an optional header row is skipped)."""
    file = Path(path)
    if not file.is_file():
        raise EdgeinfError(f"--correct: no such file: {path}")
    suffix = file.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(file, allow_pickle=False)
        if suffix == ".csv":
            return _load_csv(file)
    except (ValueError, OSError) as exc:
        reason = "every row needs one comma-separated 0/1 value per state" if suffix == ".csv" else " ".join(str(exc).split())
        raise EdgeinfError(f"--correct: cannot read {path} as a samples x states 0/1 matrix ({reason})") from exc
    raise EdgeinfError(f"--correct: {path} must be a .npy or .csv file (samples x states, 0/1)")


def _load_csv(file: Path) -> np.ndarray:
    lines = [ln for ln in file.read_text().splitlines() if ln.strip()]
    if lines and not all(_is_number(t) for t in lines[0].split(",")):
        lines = lines[1:]  # header (e.g. state ids)
    if not lines:
        raise ValueError("no rows")
    return np.loadtxt(io.StringIO("\n".join(lines)), delimiter=",", ndmin=2)


def _is_number(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


def _rounded(obj: Any, digits: int = 12) -> Any:
    """Floats to ``digits`` significant digits (hides float noise such as 1.5000000000000002)."""
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}")
    if isinstance(obj, dict):
        return {k: _rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rounded(v, digits) for v in obj]
    return obj


class OracleTool(Tool):
    """Bounds of the adaptive oracle for a state space given by costs + accuracies or a matrix."""

    name = "oracle"
    help = "bound what any adaptive scheme could gain on a set of states (adaptive-oracle theory)"
    option_groups = (JsonOutput, PlotOutput)
    outputs = {"labels": "file", "plot": "png"}

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        # "--costs -1,2" must reach our own check (one-line error), not be taken for an option
        parser._negative_number_matcher = re.compile(r"^-\.?\d")
        g = parser.add_argument_group("States")
        g.add_argument("--costs", metavar="R1,...,RN", help="resource of each state: GFLOPs, MACs, BitOPs, ms, joules...")
        g.add_argument("--accuracies", metavar="A1,...,AN", help="accuracy of each state, fractions in [0, 1]")
        g.add_argument("--correct", metavar="MATRIX", help="per-sample correctness, samples x states, 0/1 (.npy or .csv)")
        g.add_argument("--profile", metavar="JSON", help="take costs and the correctness matrix from a profile.json")
        g.add_argument("--resource", metavar="R", default=None, help=f"with --profile: {'|'.join(RESOURCES)} (default macs)")
        g.add_argument("--dominated", metavar="POLICY", default=None,
                       help=f"states another state beats (costs no more, more accurate): {'|'.join(DOMINATED_POLICIES)} (default drop, with a warning)")
        a = parser.add_argument_group("Analysis")
        a.add_argument("--alpha", metavar="X", help="constant alpha in [0, 1] for eq. 8 (default: alpha_min of --correct)")
        a.add_argument("--classes", metavar="C", help="number of classes: check the smallest state (eq. 11)")
        a.add_argument("--subsets", action="store_true", help="best subset of k states for every k")
        a.add_argument("--labels", metavar="PATH", help="write the per-sample adaptation labels (.npy or .csv; needs a matrix)")

    def run(self, args: argparse.Namespace) -> int:
        costs, accuracies, matrix, names = self._inputs(args)
        report = analyze(
            costs,
            accuracies=accuracies,
            correct=matrix,
            alpha=_parse_number(args.alpha, "--alpha", float),
            classes=_parse_number(args.classes, "--classes", int),
            subsets=args.subsets,
            dominated=args.dominated,
        )
        if args.labels:
            self._write_labels(report, args.labels)
        if args.plot:
            from edgeinf.plots.oracle import plot_opportunity_space

            plot_opportunity_space(report, args.plot, resource=args.resource or "resource")
        if args.json:
            self.print_json(_rounded(report.to_dict()))
        else:
            print(format_report(report, names))
        return 0

    # -- inputs --------------------------------------------------------------------------
    def _inputs(self, args: argparse.Namespace) -> tuple[Any, Any, Any, Sequence[str] | None]:
        if args.profile:
            if args.costs or args.accuracies or args.correct:
                raise EdgeinfError("--profile brings its own costs and matrix: do not also pass --costs/--accuracies/--correct")
            return self._from_profile(args.profile, args.resource or "macs")
        if args.resource:
            raise EdgeinfError("--resource only applies with --profile")
        if not args.costs:
            raise EdgeinfError("give --costs R1,...,RN with --accuracies A1,...,AN or --correct MATRIX (or --profile)")
        if args.accuracies and args.correct:
            raise EdgeinfError("give --accuracies or --correct, not both (a matrix determines the accuracies)")
        if not args.accuracies and not args.correct:
            raise EdgeinfError("give --accuracies A1,...,AN or --correct MATRIX for the states")
        costs = parse_floats(args.costs, "--costs")
        matrix = load_matrix(args.correct) if args.correct else None
        return costs, parse_floats(args.accuracies, "--accuracies"), matrix, None

    @staticmethod
    def _from_profile(path: str, resource: str) -> tuple[Any, Any, Any, Sequence[str]]:
        try:
            from edgeinf.profile_format import oracle_inputs
        except ImportError as exc:
            raise EdgeinfError(
                f"--profile needs edgeinf.profile_format.oracle_inputs, which this install lacks ({exc}); "
                "pass --costs and --correct instead"
            ) from exc
        costs, matrix, state_ids = oracle_inputs(path, resource)
        return costs, None, matrix, [str(s) for s in state_ids]

    @staticmethod
    def _write_labels(report: OracleReport, path: str) -> None:
        if report.exact is None:
            raise EdgeinfError("--labels needs per-sample correctness: pass --correct MATRIX (or --profile)")
        labels = np.asarray(report.exact.labels, dtype=np.int64)
        if path.lower().endswith(".npy"):
            buf = io.BytesIO()
            np.save(buf, labels)
            _atomic.write_bytes(path, buf.getvalue())
        elif path.lower().endswith(".csv"):
            _atomic.write_text(path, "".join(f"{int(x)}\n" for x in labels))
        else:
            raise EdgeinfError(f"--labels: {path} must end in .npy or .csv")


def _bound_row(label: str, bound: Any, alpha: str) -> str:
    ratio = "inf" if bound.r_ratio == float("inf") else f"{bound.r_ratio:.4f}x"
    return f"  {label:<24} {alpha:>6} {bound.r_oracle:>12.6g} {bound.a_oracle:>9.4f} {bound.delta_r:>12.6g} {ratio:>10} {bound.delta_a:>+8.4f}"


def format_report(report: OracleReport, names: Sequence[str] | None = None) -> str:
    """The readable table printed without ``--json``."""
    space = report.space
    lines = [f"states analysed: {space.n} of {space.n_input} (sorted by cost)"]
    if space.dropped:
        lines.append(f"dropped (another state costs no more and is more accurate): {', '.join(map(str, space.dropped))}")
    lines.append(f"  {'#':>3} {'input':>5} {'cost':>12} {'accuracy':>9}" + ("  name" if names else ""))
    for pos, (idx, r, a) in enumerate(zip(space.order, space.costs, space.accuracies), start=1):
        lines.append(f"  {pos:>3} {idx:>5} {r:>12.6g} {a:>9.4f}" + (f"  {names[idx]}" if names else ""))
    lines += ["", f"  {'bound':<24} {'alpha':>6} {'R_oracle':>12} {'A_oracle':>9} {'dR':>12} {'R_ratio':>10} {'dA':>8}"]
    lines.append(_bound_row("conservative (eq. 9)", report.conservative, "1"))
    if report.constant_alpha is not None:
        lines.append(_bound_row("constant alpha (eq. 8)", report.constant_alpha, f"{report.constant_alpha.alpha:.4g}"))
    if report.exact is not None:
        lines.append(_bound_row("exact (eq. 5)", report.exact.bound, "-"))
    lines.append(_bound_row("continuous A(R) (eq. 13)", report.continuous, "1"))
    if report.exact is not None:
        alphas = ", ".join("-" if a is None else f"{a:.4f}" for a in report.exact.alphas) or "-"
        alpha_min = "-" if report.exact.alpha_min is None else f"{report.exact.alpha_min:.4f}"
        lines += ["", f"alphas (alpha_2..alpha_N): {alphas}", f"alpha_min: {alpha_min}"]
    if report.smallest_state is not None:
        check = report.smallest_state
        lines += ["", f"smallest state (eq. 11, C = {check.classes}): {'OK' if check.passes else 'FAIL'}: {check.verdict}"]
    if report.subsets is not None:
        lines += ["", "best subsets (alpha = 1, largest state kept):", f"  {'k':>3} {'R_oracle':>12} {'R_ratio':>10}  states (input indices)"]
        for s in report.subsets:
            ratio = "inf" if s.r_ratio == float("inf") else f"{s.r_ratio:.4f}x"
            lines.append(f"  {s.k:>3} {s.r_oracle:>12.6g} {ratio:>10}  {' '.join(map(str, s.states))}")
    return "\n".join(lines)
