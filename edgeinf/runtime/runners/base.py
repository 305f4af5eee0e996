"""The runner interface: one small base class every backend (ORT, TensorRT, torch) implements.

As in Polygraphy, a runner is ``activate() / infer() / deactivate()`` (also a context
manager); subclasses write only the ``*_impl`` methods, while the base checks the inputs
against the runner's input specs and records the time of every call.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from edgeinf.errors import EdgeinfError


@functools.lru_cache(maxsize=None)
def _dtype(name: str) -> np.dtype:
    return np.dtype(name)


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (``None`` = any size, e.g. the batch dimension) and dtype of one tensor."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str

    def check(self, array: np.ndarray, where: str) -> None:
        """Raise :class:`EdgeinfError` if ``array`` does not match this spec."""
        if not isinstance(array, np.ndarray):
            raise EdgeinfError(f"{where}: input '{self.name}' must be a numpy array, got {type(array).__name__}")
        if array.dtype != _dtype(self.dtype):
            raise EdgeinfError(
                f"{where}: input '{self.name}' has dtype {array.dtype}, expected {self.dtype}; "
                f"convert it with x.astype(np.{self.dtype})")
        ok = array.ndim == len(self.shape) and all(
            want is None or want == got for want, got in zip(self.shape, array.shape))
        if not ok:
            want = "(" + ", ".join("N" if d is None else str(d) for d in self.shape) + ")"
            raise EdgeinfError(
                f"{where}: input '{self.name}' has shape {tuple(array.shape)}, expected {want} (N = any batch size)")


class Runner:
    """Base of every backend runner.

    Subclasses set ``input_specs`` (in ``activate_impl`` at the latest) and write
    ``activate_impl``, ``infer_impl`` and ``deactivate_impl``. ``infer`` takes a mapping of
    input name to array (or one array for a single-input model) and returns a dict of
    output name to array.

    Example:
        >>> with OnnxRuntimeRunner("block0.onnx") as r:   # doctest: +SKIP
        ...     out = r.infer({"x": x})
    """

    def __init__(self, name: str = "runner"):
        self.name = name
        self.input_specs: tuple[TensorSpec, ...] = ()
        self.output_names: tuple[str, ...] = ()
        self.is_active = False
        self.last_infer_ms: float | None = None
        self.total_infer_ms = 0.0
        self.calls = 0

    # -- public interface -------------------------------------------------------------
    def activate(self) -> "Runner":
        """Create sessions / buffers (once); calling it again does nothing."""
        if not self.is_active:
            self.activate_impl()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        """Release what ``activate`` created."""
        if self.is_active:
            self.deactivate_impl()
            self.is_active = False

    def infer(self, feed: Mapping[str, np.ndarray] | np.ndarray, check: bool = True) -> dict[str, np.ndarray]:
        """Run once on ``feed``; ``check=False`` skips the input checks (hot paths that checked already)."""
        if not self.is_active:
            raise EdgeinfError(f"runner '{self.name}' is not active; call activate() or use it as a context manager")
        feed = self._as_feed(feed)
        if check:
            self.check_inputs(feed)
        t0 = time.perf_counter()
        out = self.infer_impl(feed)
        self.last_infer_ms = (time.perf_counter() - t0) * 1e3
        self.total_infer_ms += self.last_infer_ms
        self.calls += 1
        return out

    def check_inputs(self, feed: Mapping[str, np.ndarray]) -> None:
        """Raise :class:`EdgeinfError` for a missing input or a wrong shape/dtype."""
        names = {s.name for s in self.input_specs}
        extra = set(feed) - names
        if extra:
            raise EdgeinfError(f"{self.name}: unknown input(s) {sorted(extra)}; expected {sorted(names)}")
        for spec in self.input_specs:
            if spec.name not in feed:
                raise EdgeinfError(f"{self.name}: missing input '{spec.name}'")
            spec.check(feed[spec.name], self.name)

    # -- subclass hooks --------------------------------------------------------------
    def activate_impl(self) -> None:
        raise NotImplementedError

    def infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def deactivate_impl(self) -> None:
        """Default: nothing to release."""

    # -- helpers ---------------------------------------------------------------------
    def _as_feed(self, feed: Mapping[str, np.ndarray] | np.ndarray) -> Mapping[str, np.ndarray]:
        if isinstance(feed, Mapping):
            return feed
        if len(self.input_specs) != 1:
            raise EdgeinfError(f"{self.name} has {len(self.input_specs)} inputs; pass a dict of name -> array")
        return {self.input_specs[0].name: feed}

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, active={self.is_active})"


def specs_from(pairs: Sequence[tuple[str, Sequence[int | str | None], str]]) -> tuple[TensorSpec, ...]:
    """TensorSpecs from (name, shape, dtype) triples; symbolic dims (strings, -1) become ``None``."""
    out = []
    for name, shape, dtype in pairs:
        dims = tuple(d if isinstance(d, int) and d >= 0 else None for d in shape)
        out.append(TensorSpec(name, dims, dtype))
    return tuple(out)
