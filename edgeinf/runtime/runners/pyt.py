"""Torch runner: the reference backend (a torch module or callable on CPU or CUDA)."""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from edgeinf import _lazy
from edgeinf.runtime.runners.base import Runner, TensorSpec


class TorchRunner(Runner):
    """Runs ``module(*inputs)`` under ``torch.inference_mode`` and returns numpy outputs.

    Args:
        module: an ``nn.Module`` or any callable on tensors.
        input_specs: the inputs' specs (name, shape with ``None`` for free dims, dtype).
        output_names: names for the outputs (one per returned tensor).
        device: "cpu" or "cuda"; CUDA runs are synchronized so timings are real.
    """

    def __init__(self, module: Callable, input_specs: Sequence[TensorSpec], output_names: Sequence[str] = ("y",),
                 device: str = "cpu", name: str = "torch"):
        super().__init__(name)
        self.module = module
        self.input_specs = tuple(input_specs)
        self.output_names = tuple(output_names)
        self.device = device
        self._torch = None

    def activate_impl(self) -> None:
        self._torch = _lazy.require("torch", "the torch runner")
        if hasattr(self.module, "eval"):
            self.module = self.module.eval().to(self.device)

    def infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            args = [torch.from_numpy(np.ascontiguousarray(feed[s.name])).to(self.device) for s in self.input_specs]
            out = self.module(*args)
            if self.device.startswith("cuda"):
                torch.cuda.synchronize()
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return {n: o.detach().cpu().numpy() for n, o in zip(self.output_names, outs)}
