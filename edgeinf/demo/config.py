"""The settings of one ``edgeinf demo`` run (validated before anything is trained)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeinf.branch import check_bits
from edgeinf.costs import LatencyConfig
from edgeinf.errors import EdgeinfError
from edgeinf.quant.config import QuantConfig


@dataclass(frozen=True)
class DemoConfig:
    """Settings of one demo run.

    Args:
        out_dir: where results go (created).
        models: zoo model names; the first one's profile is ``out_dir/profile.json`` and only it is
            exported, run and benchmarked.
        bit_levels: bit-widths of the branch space (32 = fp32, 16 = fp16).
        group_size: PTQ group size for integer bit-widths (None = per output channel).
        method: PTQ scale method (mse | percentile | rtn).
        monotone_bits: QuEE's rule: bits never increase along a path.
        max_branches: branches profiled per model (a seeded sample when the space is larger).
        latency: how latency is measured (None = not measured).
        seed: sampling and training seed.
        cache: zoo cache directory (None = default; False = no cache).
        split: the held-out split to profile on: ``"test"`` or ``"val"``.
        test_samples: use only the first n samples of that split (None = all).
        threads: torch threads for the whole run; None = 1 when the machine is busy (load average
            above half its cores: several threads then mostly wait on each other), else torch's default.
        runtime_s: length of the runtime step's replay under contention, in seconds.
        within_points: the report compares the full model with the fastest branch whose accuracy is
            at most this many points (percent) below the full model's.
        graded_samples: test images in the graded-difficulty set (each at every corruption severity;
            None = all, 0 = no graded set).
        bench_iters: timed pairs of the full-vs-fast comparison.
    """

    out_dir: Path
    models: tuple[str, ...] = ("digits-resnet", "digits-vit")
    bit_levels: tuple[int, ...] = (32, 16, 8, 6, 4, 2)
    group_size: int | None = 32
    method: str = "mse"
    monotone_bits: bool = True
    max_branches: int = 160
    latency: LatencyConfig | None = field(default_factory=lambda: LatencyConfig(warmup=3, repeats=20, threads=1))
    seed: int = 0
    cache: Any = None
    split: str = "test"
    test_samples: int | None = None
    threads: int | None = None
    runtime_s: float = 24.0
    within_points: float = 1.0
    graded_samples: int | None = 400
    bench_iters: int = 200

    def __post_init__(self) -> None:
        if not self.models:
            raise EdgeinfError("the demo needs at least one model; e.g. --models digits-resnet")
        if self.test_samples is not None and self.test_samples < 1:
            raise EdgeinfError(f"test_samples must be >= 1, got {self.test_samples}")
        if self.threads is not None and self.threads < 1:
            raise EdgeinfError(f"threads must be >= 1, got {self.threads}")
        if self.split not in ("test", "val"):
            raise EdgeinfError(f"split must be 'test' or 'val', got {self.split!r}")
        if self.max_branches < 1:
            raise EdgeinfError(f"max_branches must be >= 1, got {self.max_branches}")
        if not 0.0 <= self.within_points <= 100.0:
            raise EdgeinfError(f"within_points must be in 0..100 (accuracy points), got {self.within_points}")
        if self.graded_samples is not None and self.graded_samples < 0:
            raise EdgeinfError(f"graded_samples must be >= 0 (0 = no graded set), got {self.graded_samples}")
        if self.bench_iters < 1:
            raise EdgeinfError(f"bench_iters must be >= 1, got {self.bench_iters}")
        for bits in self.bit_levels:  # fail before any training starts
            check_bits(bits, "bit level")
        QuantConfig(group_size=self.group_size, method=self.method)

    def profile_path(self, name: str) -> Path:
        """Where the profile of model ``name`` is written."""
        if name == self.models[0]:
            return Path(self.out_dir) / "profile.json"
        return Path(self.out_dir) / name / "profile.json"
