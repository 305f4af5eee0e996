"""SplitModel: a torch model split into stem, residual blocks, final head and early-exit heads.

A :class:`SplitModel` is what every other part of edgeinf works on: the branch space skips
blocks whose output shape equals their input shape (identity shortcut), stops at exit heads
attached after chosen blocks, and quantizes blocks one by one. Adapters in
:mod:`edgeinf.adapters` build one from a torchvision / timm / ``nn.Sequential`` model; the
built-in digits models in :mod:`edgeinf.zoo` are built as one directly.

Example:
    >>> import torch
    >>> from edgeinf.adapters import split
    >>> import torchvision
    >>> sm = split(torchvision.models.resnet18(weights=None))
    >>> sm.skippable()[:3]
    [True, True, False]
    >>> head = sm.add_exit(3)
    >>> logits = sm.forward_branch(torch.zeros(1, 3, 224, 224), blocks=[0, 2, 3], exit=3)
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn

from edgeinf.errors import EdgeinfError

KINDS = ("resnet", "cnn", "vit", "sequential")


class PoolHead(nn.Module):
    """CNN head: global pooling, flatten, then a classifier (torchvision ResNet's avgpool + fc)."""

    def __init__(self, pool: nn.Module, fc: nn.Module):
        super().__init__()
        self.pool, self.fc = pool, fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x), 1))

    def make_like(self, feature_shape: Sequence[int], num_classes: int) -> "PoolHead":
        """A fresh head of the same form for features of ``feature_shape`` ([C, H, W])."""
        return PoolHead(nn.AdaptiveAvgPool2d(1), nn.Linear(int(feature_shape[0]), num_classes))


class TokenHead(nn.Module):
    """Transformer head: final norm, class-token (or mean) pooling, optional fc norm, classifier.

    Args:
        norm: norm applied to every token (the encoder's final LayerNorm); None for none.
        fc: the classifier.
        pool: ``"token"`` takes token 0, ``"avg"`` averages the tokens after the prefix ones.
        num_prefix_tokens: class (+ register) tokens at the start of the sequence.
        fc_norm: norm after pooling (timm's ``fc_norm``); None for none.
    """

    def __init__(self, norm: nn.Module | None, fc: nn.Module, pool: str = "token",
                 num_prefix_tokens: int = 1, fc_norm: nn.Module | None = None):
        super().__init__()
        if pool not in ("token", "avg"):
            raise EdgeinfError(f"TokenHead pool must be 'token' or 'avg', got {pool!r}")
        self.norm = norm if norm is not None else nn.Identity()
        self.fc_norm = fc_norm if fc_norm is not None else nn.Identity()
        self.fc, self.pool, self.num_prefix_tokens = fc, pool, int(num_prefix_tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        x = x[:, 0] if self.pool == "token" else x[:, self.num_prefix_tokens:].mean(dim=1)
        return self.fc(self.fc_norm(x))

    def make_like(self, feature_shape: Sequence[int], num_classes: int) -> "TokenHead":
        """A fresh head of the same form for token features of ``feature_shape`` ([T, D])."""
        dim = int(feature_shape[-1])
        norm = _fresh_norm(self.norm, dim)
        fc_norm = _fresh_norm(self.fc_norm, dim)
        return TokenHead(norm, nn.Linear(dim, num_classes), self.pool, self.num_prefix_tokens, fc_norm)


def _fresh_norm(like: nn.Module, dim: int) -> nn.Module | None:
    if isinstance(like, nn.Identity):
        return None
    eps = getattr(like, "eps", 1e-6)
    return nn.LayerNorm(dim, eps=eps)


def default_head(feature_shape: Sequence[int], num_classes: int) -> nn.Module:
    """An exit head chosen from the feature rank: [C,H,W] -> PoolHead, [T,D] -> TokenHead, [D] -> Linear."""
    if len(feature_shape) == 3:
        return PoolHead(nn.AdaptiveAvgPool2d(1), nn.Linear(int(feature_shape[0]), num_classes))
    if len(feature_shape) == 2:
        return TokenHead(nn.LayerNorm(int(feature_shape[1])), nn.Linear(int(feature_shape[1]), num_classes))
    if len(feature_shape) == 1:
        return nn.Linear(int(feature_shape[0]), num_classes)
    raise EdgeinfError(f"cannot build an exit head for features of shape {tuple(feature_shape)}; pass head=")


class SplitModel(nn.Module):
    """A model as stem -> blocks -> head, with optional exit heads after blocks.

    Args:
        stem: everything before the first block.
        blocks: the residual blocks, in order.
        head: the final head (logits from the last block's features).
        kind: ``"resnet"``, ``"cnn"`` (other convolutional families), ``"vit"`` or ``"sequential"``.
        name: a name for reports and packages.
        input_shape: one input without the batch dimension, e.g. ``(3, 224, 224)``.
        num_classes: None = read from the head's output on a shape trace.
        residual: per block, whether its structure has an identity shortcut (True), has none
            (False) or is unknown (None: decided by the shape trace alone). None = all unknown.
    """

    def __init__(self, stem: nn.Module, blocks: Iterable[nn.Module], head: nn.Module, *,
                 input_shape: Sequence[int], kind: str = "sequential", name: str = "model",
                 num_classes: int | None = None, residual: Sequence[bool | None] | None = None):
        super().__init__()
        if kind not in KINDS:
            raise EdgeinfError(f"SplitModel kind must be one of {KINDS}, got {kind!r}")
        self.stem, self.blocks, self.head = stem, nn.ModuleList(blocks), head
        self.exits = nn.ModuleDict()
        if len(self.blocks) == 0:
            raise EdgeinfError("SplitModel needs at least one block; pass the model's residual blocks")
        self.kind, self.name = kind, name
        self.input_shape = tuple(int(s) for s in input_shape)
        residual = [None] * len(self.blocks) if residual is None else list(residual)
        if len(residual) != len(self.blocks):
            raise EdgeinfError(f"residual has {len(residual)} entries for {len(self.blocks)} blocks")
        self._residual = residual
        self._shapes: list[tuple[int, ...]] | None = None
        self._checked: dict = {}
        self.num_classes = int(num_classes) if num_classes is not None else self._trace_classes()

    # ----- structure -------------------------------------------------------------------------
    def trace_shapes(self) -> list[tuple[int, ...]]:
        """Shapes (without batch) of the stem output, then of each block's output, on a zero input."""
        if self._shapes is None:
            shapes, _ = self._trace()
            self._shapes = shapes
        return list(self._shapes)

    def _trace(self) -> tuple[list[tuple[int, ...]], torch.Tensor]:
        ref = next(iter(self.parameters()), None)
        x = torch.zeros((1, *self.input_shape), dtype=ref.dtype if ref is not None else torch.float32,
                        device=ref.device if ref is not None else "cpu")
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                x = self.stem(x)
                shapes = [tuple(x.shape[1:])]
                for block in self.blocks:
                    x = block(x)
                    shapes.append(tuple(x.shape[1:]))
                out = self.head(x)
        except RuntimeError as exc:
            raise EdgeinfError(f"{self.name}: an input of shape {self.input_shape} does not run through "
                               f"the model ({str(exc).splitlines()[0]}); check input_shape") from exc
        finally:
            self.train(was_training)
        return shapes, out

    def _trace_classes(self) -> int:
        shapes, out = self._trace()
        self._shapes = shapes
        return int(out.shape[-1])

    def skippable(self) -> list[bool]:
        """Per block: True iff it has an identity shortcut and its output shape equals its input shape."""
        shapes = self.trace_shapes()
        same = [shapes[i] == shapes[i + 1] for i in range(len(self.blocks))]
        return [bool(s and r is not False) for s, r in zip(same, self._residual)]

    def exit_points(self) -> list[int]:
        """Block indices that have an exit head after them, ascending."""
        return sorted(int(k) for k in self.exits.keys())

    def add_exit(self, i: int, head: nn.Module | None = None) -> nn.Module:
        """Attach an exit head after block ``i`` (same form as the final head if ``head`` is None).

        Returns the head. A new head is on the backbone's device and dtype, untrained; train it
        with :func:`edgeinf.exits.train_exits`.
        """
        n = len(self.blocks)
        if not isinstance(i, int) or not 0 <= i < n - 1:
            raise EdgeinfError(f"exit position must be a block index in 0..{n - 2} (block {n - 1} "
                               f"feeds the final head), got {i!r}")
        if head is None:
            feat = self.trace_shapes()[i + 1]
            make_like = getattr(self.head, "make_like", None)
            head = make_like(feat, self.num_classes) if make_like else default_head(feat, self.num_classes)
            ref = next(iter(self.parameters()), None)
            if ref is not None:
                head = head.to(device=ref.device, dtype=ref.dtype)
        self.exits[str(i)] = head
        self._checked.clear()
        return head

    # ----- execution ---------------------------------------------------------------------------
    def _check(self, kept: tuple[int, ...], exit: int | None, last: int) -> None:
        """Validate kept block indices; every block not kept up to ``last`` must be skippable."""
        key = (kept, exit, last)
        if key in self._checked:
            return
        n = len(self.blocks)
        if any(not 0 <= b < n for b in kept) or list(kept) != sorted(set(kept)):
            raise EdgeinfError(f"blocks must be distinct ascending indices in 0..{n - 1}, got {list(kept)}")
        if exit is not None:
            if str(exit) not in self.exits:
                raise EdgeinfError(f"no exit after block {exit}; exits are at {self.exit_points()} (add_exit first)")
            if kept and kept[-1] > exit:
                raise EdgeinfError(f"exit {exit} comes before kept block {kept[-1]}")
        skip = self.skippable()
        bad = [b for b in range(last + 1) if b not in kept and not skip[b]]
        if bad:
            raise EdgeinfError(f"blocks {bad} cannot be skipped (their output shape differs from their "
                               f"input or they have no identity shortcut); keep them")
        self._checked[key] = True

    def features(self, x: torch.Tensor, blocks: Iterable[int] | None = None) -> torch.Tensor:
        """Run the stem then the kept ``blocks`` (None = all) and return the features.

        Blocks not kept before the last kept one must be skippable.
        """
        kept = tuple(range(len(self.blocks))) if blocks is None else tuple(int(b) for b in blocks)
        self._check(kept, None, kept[-1] if kept else -1)
        return self._run(x, kept)

    def _run(self, x: torch.Tensor, kept: tuple[int, ...]) -> torch.Tensor:
        x = self.stem(x)
        for b in kept:
            x = self.blocks[b](x)
        return x

    def forward_branch(self, x: torch.Tensor, blocks: Iterable[int] | None = None,
                       exit: int | None = None) -> torch.Tensor:
        """Logits of one branch: the kept ``blocks`` (None = all up to the exit), then ``exit``'s head.

        Args:
            x: a batch of inputs.
            blocks: kept block indices, ascending; every block not kept up to the exit (or up to
                the last block for the final head) must be skippable.
            exit: block index of an exit head; None = the final head.
        """
        last = len(self.blocks) - 1 if exit is None else int(exit)
        kept = tuple(range(last + 1)) if blocks is None else tuple(int(b) for b in blocks)
        self._check(kept, None if exit is None else int(exit), last)
        head = self.head if exit is None else self.exits[str(int(exit))]
        return head(self._run(x, kept))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The full model: every block, then the final head."""
        return self.head(self._run(x, tuple(range(len(self.blocks)))))

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, kind={self.kind!r}, input_shape={self.input_shape}, "
                f"num_classes={self.num_classes}, blocks={len(self.blocks)}, exits={self.exit_points()}")
