"""Costs of blocks and branches: MACs, BitOPs (QuEE eq. 17), parameter bytes and measured latency.

MACs are counted by running each part once under ``torch.utils.flop_counter.FlopCounterMode``
(convolutions, linear layers and attention matmuls; FLOPs / 2), batch 1. BitOPs weigh each
part's MACs by its bit-width: stem and heads run in fp32 (32 bits), kept blocks at their bits.
Latency is timed with :mod:`edgeinf.benchmark.timing` after a warm-up and reported as ``*_ms`` percentiles.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

from edgeinf._lazy import require
from edgeinf.benchmark.timing import interleave, summarize_ms, time_calls
from edgeinf.branch import Branch
from edgeinf.errors import EdgeinfError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

HEAD_BITS = 32  # stem and heads are not quantized


def module_macs(module: "nn.Module", *inputs: Any) -> int:
    """Multiply-accumulates of one forward of ``module`` on ``inputs`` (FLOP counter / 2)."""
    torch = require("torch", "MAC counting")
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, custom_mapping=_extra_flop_rules(torch))
    mha = getattr(torch.backends, "mha", None)
    fast = mha.get_fastpath_enabled() if mha is not None else None
    try:
        if mha is not None:  # the fused attention kernel is invisible to the counter: use the plain ops
            mha.set_fastpath_enabled(False)
        with torch.no_grad(), counter:
            module(*inputs)
    finally:
        if mha is not None:
            mha.set_fastpath_enabled(fast)
    return int(counter.get_total_flops()) // 2


def _extra_flop_rules(torch: Any) -> dict[Any, Any]:
    """Counting rules torch's FLOP counter lacks (the CPU kernel of scaled_dot_product_attention)."""
    from torch.utils.flop_counter import sdpa_flop_count

    def sdpa_cpu(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return {} if op is None else {op: sdpa_cpu}


@dataclass(frozen=True)
class SplitCosts:
    """MACs (batch 1) of each part of a split model.

    Attributes:
        stem_macs: the stem.
        block_macs: one entry per block.
        head_macs: the final head.
        exit_macs: exit index -> its head's MACs.
    """

    stem_macs: int
    block_macs: tuple[int, ...]
    head_macs: int
    exit_macs: dict[int, int] = field(default_factory=dict)

    @classmethod
    def of(cls, model: "nn.Module") -> "SplitCosts":
        """Count every part of ``model`` (a SplitModel) on a zero input of its ``input_shape``."""
        torch = require("torch", "MAC counting")
        ref = next(iter(model.parameters()))
        x = torch.zeros((1, *model.input_shape), dtype=ref.dtype, device=ref.device)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                stem_macs, h = module_macs(model.stem, x), model.stem(x)
                feats, blocks = {}, []
                for i, block in enumerate(model.blocks):
                    blocks.append(module_macs(block, h))
                    h = block(h)
                    feats[i] = h
                exits = {int(k): module_macs(head, feats[int(k)]) for k, head in model.exits.items()}
                head = module_macs(model.head, h)
        finally:
            model.train(was_training)
        return cls(stem_macs, tuple(blocks), head, exits)

    def _head(self, exit: int | None) -> int:
        if exit is None:
            return self.head_macs
        if exit not in self.exit_macs:
            raise EdgeinfError(f"no exit after block {exit}; exits are at {sorted(self.exit_macs)}")
        return self.exit_macs[exit]

    def macs(self, branch: Branch) -> int:
        """MACs of ``branch`` (batch 1): stem + kept blocks + its head."""
        return self.stem_macs + sum(self.block_macs[i] for i in branch.blocks) + self._head(branch.exit)

    def bitops(self, branch: Branch) -> int:
        """Unnormalized BitOPs: sum over parts of MACs x bits (stem and heads at 32 bits)."""
        blocks = sum(self.block_macs[i] * b for i, b in zip(branch.blocks, branch.bits or ()))
        return blocks + (self.stem_macs + self._head(branch.exit)) * HEAD_BITS

    def max_bitops(self, max_bits: int) -> int:
        """BitOPs of the whole network (all blocks, final head) at ``max_bits``: eq. 17's denominator."""
        return (self.stem_macs + sum(self.block_macs) + self.head_macs) * max_bits

    def bitops_norm(self, branch: Branch, max_bits: int) -> float:
        """QuEE eq. 17: the branch's BitOPs over the full network's at the highest bit-width."""
        return self.bitops(branch) / self.max_bitops(max_bits)

    def to_dict(self) -> dict[str, Any]:
        return {"stem_macs": self.stem_macs, "block_macs": list(self.block_macs), "head_macs": self.head_macs,
                "exit_macs": {str(k): v for k, v in sorted(self.exit_macs.items())}}


def branch_param_bytes(variants: Any, branch: Branch) -> int:
    """Bytes of the parameters ``branch`` needs, bits-aware (see ``BlockVariants.param_bytes``):
    packed codes + float32 scales for quantized weights, 2 or 4 bytes per other parameter."""
    return int(variants.param_bytes(branch))


# -- latency -------------------------------------------------------------------------------
@dataclass(frozen=True)
class LatencyConfig:
    """How latency is measured: batch size, warm-up and timed calls, torch threads (None = as set)."""

    batch_size: int = 1
    warmup: int = 5
    repeats: int = 30
    threads: int | None = 1

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.repeats < 1 or self.warmup < 0:
            raise EdgeinfError(f"bad latency settings {self}; need batch_size >= 1, repeats >= 1, warmup >= 0")
        if self.threads is not None and self.threads < 1:
            raise EdgeinfError(f"threads must be >= 1 or None, got {self.threads}")


class TorchThreads:
    """Context manager that sets torch's intra-op threads and restores them."""

    def __init__(self, threads: int | None):
        self.threads, self.saved = threads, None

    def __enter__(self) -> None:
        torch = require("torch", "setting torch's thread count")
        if self.threads is not None:
            self.saved = torch.get_num_threads()
            torch.set_num_threads(self.threads)

    def __exit__(self, *exc) -> None:
        if self.saved is not None:
            require("torch").set_num_threads(self.saved)


def measure(fn: Callable[[], Any], config: LatencyConfig | None = None) -> dict[str, float]:
    """Latency statistics (``*_ms`` keys, :func:`edgeinf.benchmark.timing.summarize_ms`) of ``fn``
    under ``config``: inference mode, the chosen torch thread count, ``warmup`` untimed calls."""
    torch = require("torch", "latency measurement")
    config = LatencyConfig() if config is None else config
    with TorchThreads(config.threads), torch.inference_mode():
        return summarize_ms(time_calls(fn, config.repeats, warmup=config.warmup))


def measure_interleaved(fns: Sequence[Callable[[], Any]], config: LatencyConfig | None = None, seed: int = 0,
                        progress: Callable[[int], None] | None = None) -> list[dict[str, float]]:
    """Latency statistics of several callables timed round-robin (:func:`edgeinf.benchmark.timing.interleave`).

    Interleaving spreads slow phases of a busy machine over all callables instead of charging
    them to whichever ran at that moment, so their comparison stays fair; the order inside each
    round is shuffled with ``seed``. ``warmup`` untimed rounds come first.
    """
    torch = require("torch", "latency measurement")
    config = LatencyConfig() if config is None else config
    on_round = (lambda r, _times: progress(r)) if progress is not None else None
    with TorchThreads(config.threads), torch.inference_mode():
        times = interleave(fns, config.repeats, warmup_rounds=config.warmup, seed=seed, on_round=on_round)
    return [summarize_ms(t) for t in times]


def synced(fn: Callable[[], Any], device: Any) -> Callable[[], Any]:
    """``fn`` followed by a CUDA synchronize when ``device`` is a CUDA device (so wall times are real)."""
    if getattr(device, "type", str(device).split(":")[0]) != "cuda":
        return fn
    torch = require("torch", "latency measurement")

    def call() -> Any:
        out = fn()
        torch.cuda.synchronize(device)
        return out
    return call


def _device_of(variants: Any) -> Any:
    return getattr(variants, "device", "cpu")


def block_latency(variants: Any, index: int, bits: int, config: LatencyConfig | None = None) -> dict[str, float]:
    """Latency of block ``index`` at ``bits`` on its input along the full path (a BlockVariants)."""
    torch = require("torch", "latency measurement")
    config = LatencyConfig() if config is None else config
    model = variants.model
    x = torch.zeros((config.batch_size, *model.input_shape), device=_device_of(variants))
    with torch.inference_mode():
        h = model.features(x, list(range(index))) if index else model.stem(x)
    block = variants.block(index, bits)
    return measure(synced(lambda: block(h), _device_of(variants)), config)


def branch_latency(variants: Any, branch: Branch, config: LatencyConfig | None = None,
                   x: "torch.Tensor | None" = None) -> dict[str, float]:
    """End-to-end latency of ``branch`` (stem, kept blocks at their bits, head) on a BlockVariants."""
    torch = require("torch", "latency measurement")
    config = LatencyConfig() if config is None else config
    if x is None:
        x = torch.zeros((config.batch_size, *variants.model.input_shape), device=_device_of(variants))
    return measure(synced(lambda: variants.forward_branch(x, branch), _device_of(variants)), config)
