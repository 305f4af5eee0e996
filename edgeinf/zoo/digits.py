"""The built-in data set: scikit-learn's 1,797 real 8x8 handwritten digits, upsampled, split with a seed.

numpy only (no torch), so the device side can use the data too.

The digits ship inside scikit-learn (no download). Pixels (0..16) are scaled to [-1, 1] and
upsampled bilinearly to ``size`` x ``size``. The split is stratified by class with a fixed
seed: 360 test, 360 validation, 1,077 training samples.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeinf import _lazy
from edgeinf.errors import EdgeinfError

NUM_CLASSES = 10
DATA_SEED = 0  # the split the built-in models are trained and profiled on
TEST_SIZE = 360
VAL_SIZE = 360


@dataclass(frozen=True)
class DigitsData:
    """The digits split: images float32 [n, 1, size, size] in [-1, 1], labels int64 [n]."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    size: int
    seed: int

    @property
    def sizes(self) -> dict[str, int]:
        """Number of samples per split."""
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of ``"train"``, ``"val"`` or ``"test"``."""
        if name not in ("train", "val", "test"):
            raise EdgeinfError(f"unknown digits split {name!r}; use 'train', 'val' or 'test'")
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")


def _stratified_indices(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Test / val / train indices: each class shuffled with ``seed`` and dealt round-robin."""
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(np.flatnonzero(y == c)) for c in range(NUM_CLASSES)])
    # interleave classes so any prefix is close to stratified
    ranks = np.concatenate([np.arange((y == c).sum()) for c in range(NUM_CLASSES)])
    order = order[np.lexsort((rng.random(len(order)), ranks))]
    return order[:TEST_SIZE], order[TEST_SIZE:TEST_SIZE + VAL_SIZE], order[TEST_SIZE + VAL_SIZE:]


def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] weights of 1-D linear resampling with half-pixel centres (torch's
    ``interpolate(mode="bilinear", align_corners=False)``)."""
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(int), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), lo), 1.0 - frac)
    np.add.at(m, (np.arange(n_out), hi), frac)
    return m


def upsample(images_8x8: np.ndarray, size: int) -> np.ndarray:
    """Scale 0..16 pixels to [-1, 1] and resize [n, 8, 8] to [n, 1, size, size] bilinearly (numpy only)."""
    x = np.asarray(images_8x8, dtype=np.float64).reshape(-1, 8, 8) / 8.0 - 1.0
    if size != 8:
        m = _bilinear_matrix(8, size)
        x = np.einsum("oi,nij,pj->nop", m, x, m)
    return x[:, None].astype(np.float32)


def load_digits(size: int = 32, seed: int = DATA_SEED) -> DigitsData:
    """Load the digits, upsampled to ``size`` x ``size``, split train/val/test with ``seed``.

    Example:
        >>> data = load_digits()
        >>> data.sizes
        {'train': 1077, 'val': 360, 'test': 360}
    """
    if not 8 <= int(size) <= 256:
        raise EdgeinfError(f"digits size must be in 8..256 pixels, got {size}")
    datasets = _lazy.require("sklearn.datasets", "the built-in digits data")
    raw = datasets.load_digits()
    y = raw.target.astype(np.int64)
    x = upsample(raw.images, int(size))
    test, val, train = _stratified_indices(y, seed)
    return DigitsData(x[train], y[train], x[val], y[val], x[test], y[test], int(size), int(seed))
