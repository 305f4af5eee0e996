"""QuantConfig: how one block is post-training quantized (weights, optional int8 activations)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from edgeinf.branch import FLOAT_BITS, INT_BITS, check_bits
from edgeinf.errors import EdgeinfError
from edgeinf.kernels.packing import BLOCK_SIZES as GROUP_SIZES

WEIGHT_METHODS = ("mse", "percentile", "rtn")
ACT_METHODS = ("minmax", "percentile", "entropy")
W8A8 = "w8a8"  # the static int8 level: 8-bit weights with ``act_bits=8``


@dataclass(frozen=True)
class QuantConfig:
    """Post-training quantization of one block.

    Args:
        bits: weight bit-width: 8, 6, 5, 4, 3, 2 (symmetric integer) or 32 / 16 (float, no
            integer quantization; 16 rounds weights to fp16).
        group_size: weights share a scale per output channel and per group of ``group_size``
            consecutive inputs (32-128 is the useful range); ``None`` = one scale per output channel.
        method: how scales are chosen: ``"mse"`` (minimise the weight error), ``"percentile"``
            or ``"rtn"`` (max-abs, round to nearest).
        percentile: the percentile of ``|w|`` used by ``method="percentile"``.
        act_bits: ``8`` makes the 8-bit level static int8 (``w8a8``): int8 weights and int8
            activations calibrated on sample data, exported so onnxruntime runs its integer kernels
            (docs/quantization.md); lower bit-widths stay weight-only. ``None`` keeps activations
            in float at every bit-width.
        act_method: activation range from ``"minmax"``, ``"percentile"`` or ``"entropy"``
            (entropy is onnxruntime's calibrator; the torch simulation then uses min-max).
        act_percentile: the percentile used by ``act_method="percentile"``.
        calib_samples: how many calibration samples to use for activations.
        int8_stem: with ``act_bits=8``, the stem is exported static int8 too (it is shared by
            every branch; on resnet18 an fp32 stem halves the w8a8 speed-up); ``None`` = int8
            where it passes the w8a8 check, else fp32 with the reason in the manifest
            (``int8_refused``); ``True`` = int8 or fail; ``False`` = fp32.
        int8_head: the same for the head and the exits (pooling and classifier then run
            ``QLinearGlobalAveragePool`` / ``QGemm``, and the last block's output needs no
            DequantizeLinear).

    Example:
        >>> QuantConfig(bits=4, group_size=32).label
        'w4g32-mse'
        >>> QuantConfig(bits=8, act_bits=8).label
        'w8a8'
    """

    bits: int = 8
    group_size: int | None = None
    method: str = "mse"
    percentile: float = 99.9
    act_bits: int | None = None
    act_method: str = "minmax"
    act_percentile: float = 99.99
    calib_samples: int = 128
    int8_stem: bool | None = None
    int8_head: bool | None = None
    version: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "bits", check_bits(self.bits, "weight bit-width"))
        if self.group_size is not None and self.group_size not in GROUP_SIZES:
            raise EdgeinfError(f"group_size {self.group_size!r} is not supported; use one of "
                               f"{', '.join(map(str, GROUP_SIZES))} or None (per output channel)")
        if self.method not in WEIGHT_METHODS:
            raise EdgeinfError(f"quantization method {self.method!r} is unknown; use one of {', '.join(WEIGHT_METHODS)}")
        if not 50.0 < float(self.percentile) <= 100.0:
            raise EdgeinfError(f"percentile must be in (50, 100], got {self.percentile!r}")
        if self.act_bits not in (None, 8):
            raise EdgeinfError(f"activation bits {self.act_bits!r} are not supported; use 8 or None (float activations)")
        if self.act_method not in ACT_METHODS:
            raise EdgeinfError(f"activation method {self.act_method!r} is unknown; use one of {', '.join(ACT_METHODS)}")
        if not 50.0 < float(self.act_percentile) <= 100.0:
            raise EdgeinfError(f"act_percentile must be in (50, 100], got {self.act_percentile!r}")
        if int(self.calib_samples) < 1:
            raise EdgeinfError(f"calib_samples must be at least 1, got {self.calib_samples!r}")

    @property
    def is_float(self) -> bool:
        """True for fp32 / fp16 (no integer weight quantization)."""
        return self.bits in FLOAT_BITS

    @property
    def label(self) -> str:
        """A short name: ``fp32``, ``fp16``, ``w8-mse``, ``w4g32-mse``, ``w8a8-mse``..."""
        if self.is_float:
            return f"fp{self.bits}"
        if self.static_int8:
            return W8A8
        group = f"g{self.group_size}" if self.group_size else ""
        act = f"a{self.act_bits}" if self.static_int8 else ""
        return f"w{self.bits}{group}{act}-{self.method}"

    @property
    def static_int8(self) -> bool:
        """True when this config's level is ``w8a8`` (8-bit weights, int8 activations)."""
        return self.bits == 8 and self.act_bits == 8

    @property
    def stem_int8(self) -> bool:
        """True when the stem is exported static int8 (``act_bits=8`` and ``int8_stem`` not False)."""
        return self.act_bits == 8 and self.int8_stem is not False

    @property
    def head_int8(self) -> bool:
        """True when the head and exits are exported static int8 (``act_bits=8`` and ``int8_head`` not False)."""
        return self.act_bits == 8 and self.int8_head is not False

    def engine_config(self) -> "QuantConfig":
        """The config the quantizer applies: ``w8a8`` weights are per output channel, max-abs
        scales (what onnxruntime's static quantizer uses), whatever group size and method are set."""
        if not self.static_int8:
            return self
        return QuantConfig(**{**asdict(self), "group_size": None, "method": "rtn"})

    def with_bits(self, bits: int) -> "QuantConfig":
        """The same settings at another bit-width."""
        return QuantConfig(**{**asdict(self), "bits": bits})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "QuantConfig":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise EdgeinfError(f"unknown QuantConfig fields {unknown}; known: {sorted(known)}")
        return cls(**data)


SUPPORTED_WEIGHT_BITS = FLOAT_BITS + INT_BITS
