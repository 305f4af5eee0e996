"""Post-training quantization of blocks (simulated in torch) in the canonical packed format.

``quantize_module(module, QuantConfig(bits=4, group_size=32))`` returns a quantized copy of a
block and its packed weights; :class:`BlockVariants` keeps one quantized copy per (block, bits)
of a split model and runs branches on them. ``QuantConfig(act_bits=8)`` makes the 8-bit level
static int8 (``w8a8``; exported through onnxruntime's quantizer, see docs/quantization.md).
Importing this package does not import torch.
"""
from edgeinf.quant.config import W8A8, QuantConfig

__all__ = ["W8A8", "QuantConfig", "quantize_module", "BlockVariants"]


def __getattr__(name: str):
    if name in ("quantize_module", "quantize_weight", "quantizable_weights", "calibrate_activations"):
        from edgeinf.quant import ptq

        return getattr(ptq, name)
    if name == "BlockVariants":
        from edgeinf.quant.variants import BlockVariants

        return BlockVariants
    raise AttributeError(f"module 'edgeinf.quant' has no attribute {name!r}")
