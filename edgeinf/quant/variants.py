"""BlockVariants: one quantized copy per (block, bits) of a split model, and branches run on them.

On a CUDA model the quantized Linear layers run the low-bit kernels (:class:`QuantLinear`, built
from the packed weights the quantizer produced); elsewhere every quantized weight is simulated
(dequantized, run as float). :meth:`BlockVariants.kernel_report` says which is which.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from edgeinf._lazy import require
from edgeinf.branch import Branch, check_bits
from edgeinf.errors import EdgeinfError
from edgeinf.quant.config import QuantConfig
from edgeinf.quant.ptq import quantize_module

KERNEL_MODES = ("auto", "simulate", "force")

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from edgeinf.kernels.packing import PackedWeight


class BlockVariants:
    """Quantized copies of a split model's blocks, built on first use and cached.

    Args:
        model: the split model (fp32); it is never modified.
        config: settings shared by all bit-widths (group size, method, activations); its
            ``bits`` is ignored. ``None`` = ``QuantConfig()``.
        calib_x: model inputs for activation calibration (needed when ``config.act_bits`` is set);
            each block is calibrated on its inputs along the full fp32 path.
        kernels: how quantized ``nn.Linear`` layers run: ``"auto"`` = through :class:`QuantLinear`'s
            CUDA kernel when the model is on a CUDA device and the kernel can run there
            (``edgeinf.kernels.quant_linear.kernels_usable``), else simulated; ``"simulate"`` =
            always dequantized float weights (what exporters read); ``"force"`` = always through
            QuantLinear (on CPU its torch path: the same function, no speed-up; for tests).
            Conv weights and ``nn.MultiheadAttention`` projections are always simulated.

    Example:
        >>> variants = BlockVariants(model, QuantConfig(group_size=32))
        >>> logits = variants.forward_branch(x, Branch((0, 1, 2), None, (8, 8, 4)))
    """

    def __init__(self, model: "nn.Module", config: QuantConfig | None = None, calib_x: "torch.Tensor | None" = None,
                 kernels: str = "auto"):
        if kernels not in KERNEL_MODES:
            raise EdgeinfError(f"kernels={kernels!r} is unknown; use one of {', '.join(KERNEL_MODES)}")
        self.model = model.eval()
        self.config = QuantConfig() if config is None else config
        self.kernels = kernels
        self._modules: dict[tuple[int, int], Any] = {}
        self._packed: dict[tuple[int, int], dict[str, PackedWeight]] = {}
        self._swapped: dict[tuple[int, int], list[str]] = {}
        self._choice: tuple[bool, str | None] | None = None
        self._calib: list["torch.Tensor"] | None = None
        self._calib_x: "torch.Tensor | None" = None
        if self.config.act_bits is not None:
            if calib_x is None or len(calib_x) == 0:
                raise EdgeinfError("int8 activations need calibration data; pass calib_x (about 128 inputs)")
            self._calib_x = calib_x[: self.config.calib_samples]
            self._calib = self._block_inputs(self._calib_x)

    def _block_inputs(self, x: "torch.Tensor") -> list["torch.Tensor"]:
        torch = require("torch", "quantization")
        inputs = []
        with torch.no_grad():
            h = self.model.stem(x)
            for block in self.model.blocks:
                inputs.append(h)
                h = block(h)
        return inputs

    def calib_inputs(self, index: int | None = None) -> "torch.Tensor | None":
        """Calibration inputs of block ``index`` along the full fp32 path (``None``: of the stem,
        i.e. the model inputs); None when the config quantizes no activations."""
        if self._calib is None:
            return None
        return self._calib_x if index is None else self._calib[index]

    def block(self, index: int, bits: int) -> "nn.Module":
        """Block ``index`` at ``bits`` (the original module for 32)."""
        bits = check_bits(bits)
        if not 0 <= index < len(self.model.blocks):
            raise EdgeinfError(f"block {index} does not exist; the model has {len(self.model.blocks)} blocks")
        if bits == 32:
            return self.model.blocks[index]
        key = (index, bits)
        if key not in self._modules:
            calib = None if self._calib is None else [self._calib[index]]
            qmodule, packed = quantize_module(self.model.blocks[index], self.config.with_bits(bits).engine_config(), calib)
            self._swapped[key] = self._swap_linears(qmodule, packed)
            self._modules[key], self._packed[key] = qmodule, packed
        return self._modules[key]

    @property
    def device(self) -> "torch.device":
        """The device of the model's parameters (where the blocks run)."""
        return next(iter(self.model.parameters())).device

    def kernel_choice(self) -> tuple[bool, str | None]:
        """``(use QuantLinear, reason)``: reason is None when quantized Linear layers run the real
        low-bit CUDA kernel, else why they are simulated. Decided once, on first use."""
        if self._choice is None:
            if self.kernels == "simulate":
                reason: str | None = "kernels='simulate' was asked"
            elif self.device.type != "cuda":
                reason = f"the model is on {self.device.type}, not a CUDA device"
            else:
                from edgeinf.kernels.quant_linear import kernels_usable

                reason = kernels_usable()
            self._choice = (self.kernels == "force" or (self.kernels == "auto" and reason is None), reason)
        return self._choice

    def _swap_linears(self, qmodule: "nn.Module", packed: dict[str, "PackedWeight"]) -> list[str]:
        if not packed or not self.kernel_choice()[0]:
            return []
        from edgeinf.kernels.quant_linear import swap_packed_linears

        return swap_packed_linears(qmodule, packed)

    def kernel_report(self, index: int, bits: int) -> dict[str, list[str]]:
        """Which packed weights of block ``index`` at ``bits`` run a real low-bit kernel.

        Returns:
            ``{"real_lowbit": [...], "simulated": [...]}`` (parameter names, as in a package
            manifest): real = computed by QuantLinear's CUDA kernel; simulated = dequantized
            weights run as float (convolutions, attention projections of ``nn.MultiheadAttention``,
            every weight when the kernel cannot run here). Both empty for fp32 / fp16.
        """
        packed = self.packed(index, bits)
        real = set(self._swapped.get((index, bits), ())) if self.kernel_choice()[1] is None else set()
        return {"real_lowbit": sorted(real), "simulated": sorted(set(packed) - real)}

    def kernel_info(self) -> dict[str, Any]:
        """How quantized layers run: ``mode`` (the ``kernels`` argument), ``lowbit_kernel``
        (``"QuantLinear-cuda"`` or None) and ``reason`` (why not, or None)."""
        use, reason = self.kernel_choice()
        return {"mode": self.kernels, "lowbit_kernel": "QuantLinear-cuda" if use and reason is None else None,
                "reason": reason}

    def packed(self, index: int, bits: int) -> dict[str, "PackedWeight"]:
        """The packed weights of block ``index`` at ``bits`` (empty for fp32 / fp16)."""
        self.block(index, bits)
        return self._packed.get((index, bits), {})

    def prepare(self, branches: Iterable[Branch]) -> int:
        """Quantize every (block, bits) the branches use; returns how many variants exist."""
        for branch in branches:
            for index, bits in zip(branch.blocks, branch.bits or ()):
                self.block(index, bits)
        return len(self._modules)

    def head(self, exit: int | None) -> "nn.Module":
        """The final head (``None``) or the exit head after block ``exit``."""
        if exit is None:
            return self.model.head
        if str(exit) not in self.model.exits:
            raise EdgeinfError(f"no exit after block {exit}; exits are at {self.model.exit_points()}")
        return self.model.exits[str(exit)]

    def forward_branch(self, x: "torch.Tensor", branch: Branch) -> "torch.Tensor":
        """Logits of ``branch`` on ``x``: stem, the kept blocks at their bits, then the branch's head."""
        h = self.model.stem(x)
        for index, bits in zip(branch.blocks, branch.bits or ()):
            h = self.block(index, bits)(h)
        return self.head(branch.exit)(h)

    def param_bytes(self, branch: Branch, head_bytes_per_param: int = 4) -> int:
        """Bytes of the parameters ``branch`` needs: stem + kept blocks at their bits + its head.

        Quantized weights count their packed codes and float32 scales; every other parameter
        counts 4 bytes (2 in an fp16 block).
        """
        total = _float_bytes(self.model.stem, head_bytes_per_param)
        total += _float_bytes(self.head(branch.exit), head_bytes_per_param)
        for index, bits in zip(branch.blocks, branch.bits or ()):
            total += self.block_param_bytes(index, bits)
        return total

    def block_param_bytes(self, index: int, bits: int) -> int:
        """Bytes of block ``index``'s parameters at ``bits``."""
        if bits in (32, 16):
            return _float_bytes(self.model.blocks[index], bits // 8)
        packed = self.packed(index, bits)
        total = sum(int(p.data.nbytes) + int(p.scales.nbytes) for p in packed.values())
        for name, param in self.model.blocks[index].named_parameters():
            if name not in packed:
                total += param.numel() * 4
        return total


def _float_bytes(module: "nn.Module", bytes_per_param: int) -> int:
    return sum(p.numel() for p in module.parameters()) * bytes_per_param
