"""QuantLinear: a torch ``nn.Linear`` replacement that runs the low-bit CUDA kernels on torch tensors.

The weight is stored in the kernel layout (buffers, so ``.to(device)`` and ``state_dict`` work).
On a CUDA tensor the kernel is launched on torch's current stream through the driver API (so
it is captured by CUDA graphs); on the CPU the layer computes ``x @ dequantize(W).T`` in torch,
which gives the same function for testing and export. This module imports torch (import it only
where torch is wanted; ``import edgeinf.kernels`` does not).
"""
from __future__ import annotations

import ctypes
from typing import Callable, Mapping

import numpy as np
import torch
from torch import nn

from edgeinf.errors import EdgeinfError
from edgeinf.kernels import _cuda, build, ops
from edgeinf.kernels.layout import KernelWeight, repack, row_scales, unpack_kernel_codes
from edgeinf.kernels.packing import PackedWeight, quantize

_MODULES: dict[tuple, _cuda.Module] = {}  # (device, context, defines, family)
_STREAM_SETUP: dict[tuple, int] = {}  # (function handle, shared bytes) -> CTAs per SM


def _module_for(device: torch.device, defines: tuple[str, ...] | None = None, family: str = "classic") -> _cuda.Module:
    """The kernel image of ``family`` loaded into ``device``'s primary context (torch's), once per
    device, tuning variant (``defines``; None = ``$EDGEINF_KERNEL_DEFINES``) and family."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    key = (index, _cuda.current_context(), defines, family)
    if key not in _MODULES:
        _MODULES[key] = _cuda.Module(build.image_for(torch.cuda.get_device_capability(index), defines, family))
    return _MODULES[key]


def _stream_ctas_per_sm(func, shared_bytes: int) -> int:
    """Raise the function's dynamic shared-memory limit once, and ask the driver how many CTAs fit an SM."""
    key = (func.value if hasattr(func, "value") else id(func), shared_bytes)
    if key not in _STREAM_SETUP:
        _cuda.set_max_dynamic_shared(func, shared_bytes)
        _STREAM_SETUP[key] = _cuda.occupancy(func, 32 * ops.STREAM_WARPS, shared_bytes)
    return _STREAM_SETUP[key]


class QuantLinear(nn.Module):
    """``y = x @ W.T + b`` with ``W`` quantized to 2-8 bits (weight-only; fp16 activations on GPU).

    Args:
        weight: the packed weight ``[out_features, in_features]``.
        bias: optional float bias ``[out_features]``.
    """

    def __init__(self, weight: PackedWeight, bias: torch.Tensor | np.ndarray | None = None):
        super().__init__()
        kw = repack(weight)
        self.in_features, self.out_features, self.bits = kw.k, kw.n, kw.bits
        self.block_size = None if weight.per_channel else weight.block_size
        self.group_blocks, self.out_mul = kw.group_blocks, kw.out_mul
        self.register_buffer("plane_a", torch.from_numpy(kw.plane_a.copy()))
        self.register_buffer("plane_b", torch.from_numpy(kw.plane_b.copy()))
        self.register_buffer("scales", torch.from_numpy(kw.scales.copy()))
        b = None if bias is None else torch.as_tensor(np.asarray(bias.detach().cpu() if isinstance(bias, torch.Tensor) else bias,
                                                                dtype=np.float32)).reshape(-1)
        if b is not None and b.numel() != kw.n:
            raise EdgeinfError(f"bias has {b.numel()} values, expected {kw.n}")
        self.register_buffer("bias", None if b is None else b.half())
        self._sm_count: int | None = None
        # a tuning variant of the kernels (e.g. ("EDGEINF_MIN_BLOCKS=2",)); None = the default build
        self.kernel_defines: tuple[str, ...] | None = None
        # "classic" or "stream" (None = ops.kernel_family(): $EDGEINF_KERNEL, else ops.DEFAULT_FAMILY)
        self.kernel_family: str | None = None
        self.slab_bytes: int | None = None  # the streaming kernel's activation slab (None = ops.SLAB_BYTES)
        self._workspace: dict = {}  # device -> (fp32 workspace, int32 counters), zero between launches
        self._w_cpu: torch.Tensor | None = None  # dequantized weight for the CPU path, made on first use

    @classmethod
    def from_linear(cls, linear: nn.Linear, bits: int, group_size: int | None = None, method: str = "mse") -> "QuantLinear":
        """Quantize an ``nn.Linear``'s weight (see :func:`edgeinf.kernels.packing.quantize`)."""
        w = linear.weight.detach().float().cpu().numpy()
        q = cls(quantize(w, bits, group_size, method=method), linear.bias)
        return q.to(linear.weight.device)

    @classmethod
    def from_packed(cls, weight: PackedWeight, bias: torch.Tensor | np.ndarray | None = None,
                    device: torch.device | str | None = None) -> "QuantLinear":
        """A layer computing with exactly ``weight``'s codes and scales (nothing is re-quantized).

        Args:
            weight: a packed ``[out_features, in_features]`` weight, e.g. one of the packed weights
                :func:`edgeinf.quant.quantize_module` returns.
            bias: optional float bias ``[out_features]``.
            device: where to put the layer (None = CPU).
        """
        q = cls(weight, bias)
        return q if device is None else q.to(device)

    def kernel_weight(self) -> KernelWeight:
        return KernelWeight(self.plane_a.cpu().numpy(), self.plane_b.cpu().numpy(), self.scales.cpu().numpy(),
                            self.out_mul, self.bits, self.out_features, self.in_features, self.group_blocks)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, block_size={self.block_size}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise EdgeinfError(f"QuantLinear expects inputs [..., {self.in_features}], got {tuple(x.shape)}")
        if not x.is_cuda:
            if self._w_cpu is None:
                self._w_cpu = torch.from_numpy(self.dequantized())
            y = x.float() @ self._w_cpu.T
            return (y if self.bias is None else y + self.bias.float()).to(x.dtype)
        return self._forward_kernel(x)

    def _forward_kernel(self, x: torch.Tensor) -> torch.Tensor:
        """The kernel path: fp16 rows ``[-1, K]`` in, fp16 ``[-1, N]`` out, back in x's shape and dtype."""
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features).to(torch.float16).contiguous()
        y = torch.empty((x2.shape[0], self.out_features), dtype=torch.float16, device=x.device)
        if x2.shape[0]:
            self._launch(x2, y)
        return y.reshape(*lead, self.out_features).to(x.dtype)

    def dequantized(self) -> np.ndarray:
        """The float32 weight ``[N, K]`` the kernel computes with (codes x fp16 kernel scales)."""
        kw = self.kernel_weight()
        q = unpack_kernel_codes(kw).astype(np.float32)
        s = row_scales(kw).T  # [N, groups]
        per = 32 * kw.group_blocks if kw.group_blocks else kw.k
        return q * np.repeat(s, per, axis=1)[:, : kw.k]

    def _launch(self, x2: torch.Tensor, y: torch.Tensor) -> None:
        dev = x2.device
        if self.plane_a.device != dev:
            raise EdgeinfError(f"QuantLinear weights are on {self.plane_a.device} but the input is on {dev}; call .to({dev})")
        if self._sm_count is None:
            self._sm_count = torch.cuda.get_device_properties(dev).multi_processor_count
        ptr = lambda t: ctypes.c_void_p(t.data_ptr() if t is not None and t.numel() else 0)  # noqa: E731
        m, n, k, nch, npad, gsb, out_mul = ops.kernel_scalars(self.kernel_shape(), x2.shape[0])
        args = [ptr(self.plane_a), ptr(self.plane_b), ptr(self.scales), ptr(x2), ptr(self.bias), ptr(y)]
        scalars = [*(ctypes.c_int(v) for v in (m, n, k, nch, npad, gsb)), ctypes.c_float(out_mul)]
        stream = torch.cuda.current_stream(dev).cuda_stream
        family = ops.kernel_family(self.kernel_family)
        module = _module_for(dev, self.kernel_defines, family)
        if family == "classic":
            func = module.function(ops.kernel_name(self.bits, self.group_blocks))
            lc = ops.launch_for(self.out_features, self.in_features, x2.shape[0], self._sm_count)
            _cuda.launch(func, lc.grid, lc.block, args + scalars, stream=stream)
            return
        slab = self._slab_budget(dev)
        probe = ops.stream_launch(n, k, m, self.bits, self.group_blocks, self._sm_count, 1, slab)
        func = module.function(probe.name)
        per_sm = _stream_ctas_per_sm(func, probe.shared_bytes)
        if per_sm < 1:
            raise EdgeinfError(f"{probe.name} does not fit an SM of {dev} ({probe.shared_bytes} B shared); "
                               "use kernel_family='classic' or a smaller slab_bytes")
        lc = ops.stream_launch(n, k, m, self.bits, self.group_blocks, self._sm_count, per_sm, slab)
        ws, counters = self._stream_workspace(dev, lc)
        _cuda.launch(func, lc.grid, lc.block, args + [ptr(ws), ptr(counters)] + scalars + [ctypes.c_int(lc.slice_chunks)],
                     stream=stream, shared_bytes=lc.shared_bytes)

    def _slab_budget(self, dev: torch.device) -> int:
        """The slab's shared memory: ``slab_bytes`` (None = SLAB_BYTES), within the device's per-block limit."""
        optin = getattr(torch.cuda.get_device_properties(dev), "shared_memory_per_block_optin", 48 << 10)
        room = optin - ops.STREAM_WARPS * ops.ring_bytes(self.bits, self.group_blocks)
        return max(4096, min(ops.SLAB_BYTES if self.slab_bytes is None else self.slab_bytes, room))

    def _stream_workspace(self, dev: torch.device, lc: "ops.StreamLaunch") -> tuple[torch.Tensor, torch.Tensor]:
        """This layer's zeroed workspace and counters on ``dev``, grown to the launch's size. The kernel
        leaves them zero, so they are reused by every launch on one stream (CUDA graphs included)."""
        ws, counters = self._workspace.get(dev, (None, None))
        if ws is None or ws.numel() < lc.workspace_floats or counters.numel() < lc.counter_ints:
            ws = torch.zeros(lc.workspace_floats, dtype=torch.float32, device=dev)
            counters = torch.zeros(lc.counter_ints, dtype=torch.int32, device=dev)
            self._workspace[dev] = (ws, counters)
        return ws, counters

    def kernel_shape(self) -> KernelWeight:
        """A KernelWeight carrying only the shape fields (no host copies) for the launch arguments."""
        empty = np.zeros(0, np.uint8)
        return KernelWeight(empty, empty, np.zeros((0, 0), np.float16), self.out_mul, self.bits, self.out_features,
                            self.in_features, self.group_blocks)


def kernels_usable() -> str | None:
    """None when QuantLinear can run its CUDA kernel here, else the reason it cannot."""
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    try:
        _cuda.libcuda()
    except EdgeinfError as exc:
        return str(exc)
    if build.find_nvcc() is None and not build.PREBUILT.is_dir():
        return "no kernel image for this GPU and no nvcc to build one"
    return None


def quantize_linear_modules(module: nn.Module, bits: int, group_size: int | None = None, method: str = "mse",
                            include: Callable[[str, nn.Linear], bool] | None = None,
                            force: bool = False) -> list[str]:
    """Replace the ``nn.Linear`` layers of ``module`` (in place) by :class:`QuantLinear`.

    Args:
        module: the model (or block) to convert.
        bits: weight bits (2, 3, 4, 5, 6, 8).
        group_size: K elements per scale (32, 64, 128, 256); None = per output channel.
        method: scale search (``"mse"``, ``"rtn"``, ``"percentile"``).
        include: ``include(name, linear)`` -> bool selects layers (None = all).
        force: convert even where the CUDA kernel cannot run (the layers then compute on the
            CPU path); by default nothing is converted without a usable GPU.

    Returns:
        The qualified names of the replaced layers (empty when nothing was converted).
    """
    if not force and kernels_usable() is not None:
        return []
    targets = [(name, mod) for name, mod in module.named_modules()
               if isinstance(mod, nn.Linear) and (include is None or include(name, mod))]
    for name, lin in targets:
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, QuantLinear.from_linear(lin, bits, group_size, method))
    return [name for name, _ in targets]


def swap_packed_linears(module: nn.Module, packed: Mapping[str, PackedWeight]) -> list[str]:
    """Replace (in place) the ``nn.Linear`` layers whose weight is in ``packed`` by QuantLinear.

    Each layer is rebuilt with :meth:`QuantLinear.from_packed` from the packed weight the
    quantizer produced (so its codes and scales are the ones the simulated copy was made from),
    keeps its bias and its forward pre-hooks (e.g. the int8 activation fake-quantization of
    :func:`edgeinf.quant.calibrate_activations`, with its ``act_scale`` buffer) and lands on the
    layer's device. Linear layers inside ``nn.MultiheadAttention`` are left alone: that module
    reads their weight directly instead of calling them.

    Args:
        module: a quantized block (see :func:`edgeinf.quant.quantize_module`).
        packed: ``{parameter name: PackedWeight}`` as returned beside it.

    Returns:
        The parameter names (``"mlp.0.weight"``...) now computed by QuantLinear.
    """
    inside_mha = {id(m) for mha in module.modules() if isinstance(mha, nn.MultiheadAttention)
                  for m in mha.modules() if m is not mha}
    swapped = []
    for name, lin in list(module.named_modules()):
        key = f"{name}.weight"
        if not name or not isinstance(lin, nn.Linear) or id(lin) in inside_mha or key not in packed:
            continue  # (a bare Linear as ``module`` cannot replace itself: wrap it in a container)
        pw = packed[key]
        if (pw.n, pw.k) != (lin.out_features, lin.in_features):
            raise EdgeinfError(f"packed weight {key!r} is [{pw.n}, {pw.k}] but the layer is "
                               f"[{lin.out_features}, {lin.in_features}]; pass the packed weights of this module")
        q = QuantLinear.from_packed(pw, lin.bias, lin.weight.device)
        if hasattr(lin, "act_scale"):
            q.register_buffer("act_scale", lin.act_scale.detach().clone())
        for hook in lin._forward_pre_hooks.values():
            q.register_forward_pre_hook(hook)
        parent_name, _, child = name.rpartition(".")
        setattr(module.get_submodule(parent_name) if parent_name else module, child, q)
        swapped.append(key)
    return swapped
