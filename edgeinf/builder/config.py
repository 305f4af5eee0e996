"""BuildConfig: every setting of one ``edgeinf.build`` run, validated when it is made."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from edgeinf.branch import check_bits
from edgeinf.errors import EdgeinfError

RESOURCES = ("macs", "bitops", "latency_ms", "param_bytes")


def _floats(values: Any, what: str) -> tuple[float, ...] | None:
    if values is None:
        return None
    out = tuple(float(v) for v in values)
    if not out:
        raise EdgeinfError(f"{what} needs at least one value (one per input channel)")
    return out


@dataclass(frozen=True)
class BuildConfig:
    """How a model and a data set become a package.

    Args:
        input_shape: one input without the batch dimension, e.g. ``(3, 64, 64)``; None = the
            model's (a SplitModel or zoo model) or the data's.
        mean, std: per-channel normalisation folded into the stem, ``(x - mean) / std``; the package
            then takes inputs in the data's own scale ([0, 1] for images). None = none.
        bits: bit-widths of the branch space and of the exported blocks (32 = fp32, 16 = fp16).
        group_size: weights per PTQ scale along K (None = one scale per output channel).
        method: PTQ scale method: ``mse``, ``percentile`` or ``rtn``.
        act_bits: 8 = int8 activations calibrated on ``calib_samples`` training inputs; None = weight-only.
        act_method: calibration of the w8a8 activations: minmax, percentile or entropy.
        calib_samples: training inputs used for calibration.
        exits: blocks after which an exit head is attached and trained; None = two, evenly spaced;
            ``()`` = none (the model's own exits, if it has any, are kept).
        exit_epochs: exit-head training epochs (the backbone stays frozen).
        max_branches: branch budget: profile every branch if the space has at most this many,
            else a seeded sample (the anchors always in).
        monotone_bits: QuEE's rule: bits never increase along a path.
        fused: branches exported as single graphs: ``pareto``, ``all`` or a number of Pareto ones.
        pareto_on: the cost the Pareto set is taken on.
        host_latency_repeats: timed torch calls per branch on this host (0 = no host latency).
        val_fraction, test_fraction: shares held out per class when the data is one set.
        min_per_class: the fewest samples a class may have in every split.
        seed: seeds the split, exit heads, branch sampling.
        name: the model's name in the package; None = the model's own.
        threads: torch threads during the build; None = torch's default.
    """

    input_shape: tuple[int, ...] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    bits: tuple[int, ...] = (32, 16, 8, 4)
    group_size: int | None = 32
    method: str = "mse"
    act_bits: int | None = None
    act_method: str = "minmax"
    calib_samples: int = 128
    exits: tuple[int, ...] | None = None
    exit_epochs: int = 30
    max_branches: int = 64
    monotone_bits: bool = True
    fused: str | int = "pareto"
    pareto_on: str = "bitops"
    host_latency_repeats: int = 10
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    min_per_class: int = 1
    seed: int = 0
    name: str | None = None
    threads: int | None = None
    version: int = 1

    def __post_init__(self) -> None:
        self._set("input_shape", None if self.input_shape is None else tuple(int(s) for s in self.input_shape))
        self._set("mean", _floats(self.mean, "mean"))
        self._set("std", _floats(self.std, "std"))
        self._set("bits", tuple(sorted({32, *(check_bits(int(b), "bit level") for b in self.bits)}, reverse=True)))
        self._set("exits", None if self.exits is None else tuple(sorted({int(e) for e in self.exits})))
        self._check_shape_and_norm()
        self._check_numbers()
        from edgeinf.quant import QuantConfig

        QuantConfig(group_size=self.group_size, method=self.method, act_bits=self.act_bits,
                    act_method=self.act_method)

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    def _check_shape_and_norm(self) -> None:
        if self.input_shape is not None and (len(self.input_shape) < 1 or min(self.input_shape) < 1):
            raise EdgeinfError(f"input shape {list(self.input_shape)} is not valid; give positive sizes, e.g. 3,64,64")
        if (self.mean is None) != (self.std is None):
            raise EdgeinfError("give both mean and std for normalisation (one value per channel each), or neither")
        if self.mean is not None:
            if len(self.mean) != len(self.std):
                raise EdgeinfError(f"mean has {len(self.mean)} values but std has {len(self.std)}; give one per channel")
            if min(self.std) <= 0:
                raise EdgeinfError(f"std must be > 0 per channel, got {list(self.std)}")

    def _check_numbers(self) -> None:
        checks = [(self.exit_epochs >= 1, f"exit_epochs must be >= 1, got {self.exit_epochs}"),
                  (self.max_branches >= 1, f"the branch budget must be >= 1, got {self.max_branches}"),
                  (self.calib_samples >= 1, f"calib_samples must be >= 1, got {self.calib_samples}"),
                  (self.host_latency_repeats >= 0, f"host_latency_repeats must be >= 0, got {self.host_latency_repeats}"),
                  (0 < self.val_fraction < 1 and 0 <= self.test_fraction < 1
                   and self.val_fraction + self.test_fraction < 1,
                   f"val/test fractions must be in (0, 1) with a sum below 1, got {self.val_fraction}, {self.test_fraction}"),
                  (self.min_per_class >= 1, f"min_per_class must be >= 1, got {self.min_per_class}"),
                  (self.pareto_on in RESOURCES, f"pareto_on must be one of {', '.join(RESOURCES)}, got {self.pareto_on!r}"),
                  (self.fused in ("pareto", "all") or (isinstance(self.fused, int) and self.fused >= 1),
                   f"fused must be pareto, all or a number >= 1, got {self.fused!r}"),
                  (self.threads is None or self.threads >= 1, f"threads must be >= 1, got {self.threads}"),
                  (self.exits is None or min(self.exits, default=0) >= 0, f"exit points must be >= 0, got {self.exits}")]
        for ok, message in checks:
            if not ok:
                raise EdgeinfError(message)

    def quant(self):
        """The PTQ settings shared by every bit level."""
        from edgeinf.quant import QuantConfig

        return QuantConfig(group_size=self.group_size, method=self.method, act_bits=self.act_bits,
                    act_method=self.act_method)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (recorded in the build record; hashed into the cache key)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}
