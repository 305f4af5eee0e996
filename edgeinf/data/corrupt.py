"""Deterministic image corruptions of graded severity (noise, blur, contrast, occlusion), numpy only.

In the spirit of MNIST-C: the same test images made harder step by step, so that inputs differ
in difficulty. Images are float [n, c, h, w] in [-1, 1] with background -1. Severity 0 is the
clean image; 1..MAX_SEVERITY grow the corruption. Every call with the same (images, kind,
severity, seed) returns the same bits.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeinf.errors import EdgeinfError

MAX_SEVERITY = 4
CORRUPTIONS = ("noise", "blur", "contrast", "occlusion")
# per severity 1..4
_NOISE_STD = (0.25, 0.5, 0.8, 1.1)       # Gaussian noise std, in units of the [-1, 1] range
_BLUR_SIGMA_FRAC = (0.02, 0.035, 0.05, 0.065)  # Gaussian blur sigma as a fraction of the image side
_CONTRAST = (0.5, 0.3, 0.18, 0.1)        # contrast factor towards mid-grey, plus noise of the same std below
_OCCLUDE_FRAC = (0.3, 0.4, 0.5, 0.6)     # side of the occluding square as a fraction of the image side


def _check(images: np.ndarray, kind: str, severity: int) -> np.ndarray:
    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 4:
        raise EdgeinfError(f"corrupt needs images of shape [n, c, h, w], got shape {x.shape}")
    if kind not in CORRUPTIONS:
        raise EdgeinfError(f"unknown corruption {kind!r}; use one of {', '.join(CORRUPTIONS)}")
    if not 0 <= int(severity) <= MAX_SEVERITY:
        raise EdgeinfError(f"severity must be in 0..{MAX_SEVERITY}, got {severity}")
    return x


def _rng(kind: str, severity: int, seed: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), CORRUPTIONS.index(kind), int(severity)])


def _gauss_kernel(sigma_px: float) -> np.ndarray:
    r = max(1, int(np.ceil(3 * sigma_px)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma_px) ** 2)
    return k / k.sum()


def _blur(x: np.ndarray, sigma_px: float) -> np.ndarray:
    """Separable Gaussian blur, edges padded with the background (-1)."""
    k = _gauss_kernel(sigma_px)
    r = len(k) // 2
    pad = np.pad(x, ((0, 0), (0, 0), (r, r), (r, r)), constant_values=-1.0)
    h, w = x.shape[-2:]
    rows = sum(k[i] * pad[:, :, i:i + h, :] for i in range(len(k)))
    return sum(k[i] * rows[:, :, :, i:i + w] for i in range(len(k))).astype(np.float32)


def _occlude(x: np.ndarray, frac: float, rng: np.random.Generator) -> np.ndarray:
    """A background-coloured square over each image, centred within the middle half."""
    n, _, h, w = x.shape
    side = max(1, int(round(frac * min(h, w))))
    cy = rng.integers(h // 4, h - h // 4, size=n)
    cx = rng.integers(w // 4, w - w // 4, size=n)
    out = x.copy()
    for i in range(n):
        y0, x0 = max(0, cy[i] - side // 2), max(0, cx[i] - side // 2)
        out[i, :, y0:y0 + side, x0:x0 + side] = -1.0
    return out


def corrupt(images: np.ndarray, kind: str, severity: int, seed: int = 0) -> np.ndarray:
    """``images`` with corruption ``kind`` at ``severity`` (0 = unchanged), clipped to [-1, 1].

    Example:
        >>> x = np.full((2, 1, 8, 8), -1.0, np.float32)
        >>> corrupt(x, "noise", 2).shape
        (2, 1, 8, 8)
    """
    x = _check(images, kind, severity)
    if severity == 0:
        return x.copy()
    s, rng = int(severity) - 1, _rng(kind, severity, seed)
    if kind == "noise":
        out = x + rng.normal(0.0, _NOISE_STD[s], size=(x.shape[0], 1, *x.shape[2:])).astype(np.float32)
    elif kind == "blur":
        out = _blur(x, max(0.5, _BLUR_SIGMA_FRAC[s] * x.shape[-1]))
    elif kind == "contrast":
        out = x * _CONTRAST[s] + rng.normal(0.0, 0.1, size=(x.shape[0], 1, *x.shape[2:])).astype(np.float32)
    else:
        out = _occlude(x, _OCCLUDE_FRAC[s], rng)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class GradedSet:
    """Test images at every severity: x [n * levels, c, h, w], y, and per sample its severity and corruption."""

    x: np.ndarray
    y: np.ndarray
    severity: np.ndarray
    kind: tuple[str, ...]

    def at(self, severity: int) -> np.ndarray:
        """Boolean mask of the samples of one severity."""
        return self.severity == int(severity)


def graded_set(x: np.ndarray, y: np.ndarray, severities=None, seed: int = 0, shift: int = 0) -> GradedSet:
    """Every image at each severity (None = 0..MAX_SEVERITY); image i gets corruption
    (i + shift) mod 4.

    The corruption of an image is the same at every severity, so a severity step changes only
    how strong it is; ``shift`` 0..3 gives each image every corruption in turn.
    """
    levels = list(range(MAX_SEVERITY + 1)) if severities is None else [int(s) for s in severities]
    x, y = np.asarray(x, np.float32), np.asarray(y)
    kinds = (np.arange(len(x)) + int(shift)) % len(CORRUPTIONS)
    xs, sev, names = [], [], []
    for s in levels:
        out = np.empty_like(x)
        for k, kind in enumerate(CORRUPTIONS):
            idx = np.flatnonzero(kinds == k)
            out[idx] = corrupt(x[idx], kind, s, seed)
        xs.append(out)
        sev.append(np.full(len(x), s))
        names += [CORRUPTIONS[k] if s else "clean" for k in kinds]
    return GradedSet(np.concatenate(xs), np.tile(y, len(levels)), np.concatenate(sev), tuple(names))
