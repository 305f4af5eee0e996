"""The user's labelled data for a build: an .npz, an image folder, or any Python sequence / torch Dataset.

Everything becomes :class:`BuildData`: float32 images ``[n, C, H, W]`` and int64 labels, split
into train (exit heads, calibration), val (the profile) and an optional test split (held out
for the device steps). One set alone is split per class, deterministically (see
:func:`stratified_split`). Layouts accepted (docs/byo.md):

- ``.npz`` with ``x_train, y_train, x_val, y_val[, x_test, y_test]`` (or ``x_train, y_train``
  alone, or ``x, y``): images float32 NCHW as the model takes them, or uint8 NHWC / NHW
  (scaled to [0, 1]); labels integers.
- a folder with one subfolder per class (the ImageFolder convention), read with Pillow and
  resized to the input shape, scaled to [0, 1]; classes in sorted folder-name order.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgeinf.errors import EdgeinfError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class BuildData:
    """Train / val (/ test) images float32 ``[n, C, H, W]`` and labels int64 ``[n]``."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    classes: tuple[str, ...] | None = None
    source: str = "arrays"

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.x_train.shape[1:])

    @property
    def sizes(self) -> dict[str, int]:
        """Samples per split."""
        return {s: len(y) for s in SPLITS if (y := getattr(self, f"y_{s}")) is not None}

    def digest(self) -> str:
        """sha256 of every array (part of the build's cache key)."""
        h = hashlib.sha256()
        for s in SPLITS:
            for arr in (getattr(self, f"x_{s}"), getattr(self, f"y_{s}")):
                if arr is not None:
                    h.update(str((arr.dtype, arr.shape)).encode())
                    h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()

    def check(self, input_shape: Sequence[int], num_classes: int) -> None:
        """One-line errors for samples of the wrong shape and labels outside ``0..num_classes-1``."""
        want = tuple(int(s) for s in input_shape)
        for s in SPLITS:
            x, y = getattr(self, f"x_{s}"), getattr(self, f"y_{s}")
            if x is None:
                continue
            if tuple(x.shape[1:]) != want:
                raise EdgeinfError(f"the {s} images have shape {list(x.shape[1:])} per sample but the model takes "
                                   f"{list(want)}; resize the data or pass the matching --input-shape")
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
                raise EdgeinfError(f"the {s} labels span {int(y.min())}..{int(y.max())} but the model has {num_classes} "
                                   f"classes (labels 0..{num_classes - 1}); fix the labels or build a model with "
                                   f"{int(y.max()) + 1} classes (e.g. --arch-kwargs '{{\"num_classes\": {int(y.max()) + 1}}}')")


# -- conversions ------------------------------------------------------------------------------
def as_images(x: Any, what: str) -> np.ndarray:
    """float32 NCHW from float NCHW, uint8 NHWC / NCHW / NHW (scaled to [0, 1]) or a list of such."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[:, None]  # [n, H, W]: one channel
    if x.ndim != 4:
        raise EdgeinfError(f"{what} has shape {list(x.shape)}; images must be [n, C, H, W] (float32) or "
                           "[n, H, W, C] (uint8)")
    if x.dtype == np.uint8:
        if x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x, dtype=np.float32) / np.float32(255.0)
    if not np.issubdtype(x.dtype, np.floating):
        raise EdgeinfError(f"{what} holds {x.dtype}; images must be float32 NCHW or uint8 NHWC")
    if not np.isfinite(x).all():
        raise EdgeinfError(f"{what} holds NaN or infinite values; clean the data first")
    return np.ascontiguousarray(x, dtype=np.float32)


def as_labels(y: Any, n: int, what: str) -> np.ndarray:
    """int64 labels ``[n]`` (one per image, integers >= 0)."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise EdgeinfError(f"{what} has shape {list(y.shape)}; give one integer label per image ({n} images)")
    if not (np.issubdtype(y.dtype, np.integer) or (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)))):
        raise EdgeinfError(f"{what} holds {y.dtype}; labels must be integer class indices")
    y = y.astype(np.int64)
    if n and int(y.min()) < 0:
        raise EdgeinfError(f"{what} holds a negative label ({int(y.min())}); labels are class indices 0..C-1")
    return y


# -- splitting --------------------------------------------------------------------------------
def stratified_split(x: np.ndarray, y: np.ndarray, val_fraction: float, test_fraction: float, seed: int,
                     min_per_class: int = 1) -> BuildData:
    """Split one set per class (seeded shuffle, then ``val_fraction`` / ``test_fraction`` of each
    class, at least ``min_per_class`` in every split); the same inputs give the same split."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    splits = ("train", "val", "test") if test_fraction > 0 else ("train", "val")
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        need = min_per_class * len(splits)
        if len(idx) < need:
            raise EdgeinfError(f"class {int(c)} has {len(idx)} samples; splitting into {'/'.join(splits)} needs at least "
                               f"{need} per class; add samples or give separate val/test sets")
        n_val = max(min_per_class, int(round(len(idx) * val_fraction)))
        n_test = max(min_per_class, int(round(len(idx) * test_fraction))) if test_fraction > 0 else 0
        n_val = min(n_val, len(idx) - n_test - min_per_class)
        parts["val"].append(idx[:n_val])
        parts["test"].append(idx[n_val:n_val + n_test])
        parts["train"].append(idx[n_val + n_test:])
    order = {s: np.sort(np.concatenate(p)) if p else np.zeros(0, int) for s, p in parts.items()}
    test = order["test"] if test_fraction > 0 else None
    return BuildData(x[order["train"]], y[order["train"]], x[order["val"]], y[order["val"]],
                     None if test is None else x[test], None if test is None else y[test])


def check_per_class(data: BuildData, min_per_class: int) -> None:
    """Every class of the training labels needs ``min_per_class`` samples in train and val."""
    classes = np.unique(np.concatenate([data.y_train, data.y_val]))
    for split in ("train", "val"):
        counts = np.bincount(getattr(data, f"y_{split}"), minlength=int(classes.max()) + 1)
        low = [int(c) for c in classes if counts[c] < min_per_class]
        if low:
            raise EdgeinfError(f"the {split} split has fewer than {min_per_class} samples of class {low[0]} "
                               f"({int(counts[low[0]])}); every class needs samples in train and val")


# -- loaders ----------------------------------------------------------------------------------
def from_arrays(arrays: dict[str, Any], source: str, val_fraction: float, test_fraction: float, seed: int,
                min_per_class: int = 1) -> BuildData:
    """BuildData from named arrays (``x_train, y_train, x_val, y_val[, x_test, y_test]``, or a single
    ``x, y`` / ``x_train, y_train`` set, split per class)."""
    keys = set(arrays)
    if {"x_train", "y_train", "x_val", "y_val"} <= keys:
        sets = {s: _pair(arrays, s) for s in SPLITS if f"x_{s}" in keys}
        data = BuildData(*sets["train"], *sets["val"], *(sets.get("test") or (None, None)), source=source)
    elif {"x", "y"} <= keys or {"x_train", "y_train"} <= keys:
        x, y = _pair(arrays, "train") if "x_train" in keys else _pair(arrays, None)
        data = stratified_split(x, y, val_fraction, test_fraction, seed, min_per_class)
        data = BuildData(**{**data.__dict__, "source": source})
    else:
        raise EdgeinfError(f"{source} holds {sorted(keys)}; it needs x_train, y_train, x_val, y_val "
                           "(optionally x_test, y_test), or one set x, y to split")
    shapes = {tuple(getattr(data, f"x_{s}").shape[1:]) for s in data.sizes}
    if len(shapes) > 1:
        raise EdgeinfError(f"{source}: the splits have different image shapes {sorted(shapes)}; use one shape")
    check_per_class(data, min_per_class)
    return data


def _pair(arrays: dict[str, Any], split: str | None) -> tuple[np.ndarray, np.ndarray]:
    xk, yk = ("x", "y") if split is None else (f"x_{split}", f"y_{split}")
    if yk not in arrays:
        raise EdgeinfError(f"{xk} has no labels {yk}; give both")
    x = as_images(arrays[xk], xk)
    if len(x) == 0:
        raise EdgeinfError(f"{xk} is empty; every split needs at least one labelled image")
    return x, as_labels(arrays[yk], len(x), yk)


def load_npz(path: str | Path, **split_options: Any) -> BuildData:
    """BuildData from an ``.npz`` (see the module docstring for the keys and layouts)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as exc:
        raise EdgeinfError(f"cannot read {path} as an .npz of arrays ({type(exc).__name__}: {exc}); "
                           "save it with numpy.savez") from None
    return from_arrays(arrays, str(path), **split_options)


def load_image_folder(root: str | Path, input_shape: Sequence[int] | None, **split_options: Any) -> BuildData:
    """BuildData from ``root/<class>/<image>`` files, resized to ``input_shape`` (C, H, W)."""
    root = Path(root)
    if input_shape is None or len(input_shape) != 3 or input_shape[0] not in (1, 3):
        raise EdgeinfError(f"reading the image folder {root} needs the input shape C,H,W with C = 1 or 3 "
                           f"(got {None if input_shape is None else list(input_shape)}); pass --input-shape")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = {c: sorted(f for f in (root / c).rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES) for c in classes}
    if not classes or not any(files.values()):
        raise EdgeinfError(f"the image folder {root} holds no images in class subfolders; lay it out as "
                           f"{root}/<class name>/<image>.png (one subfolder per class)")
    empty = [c for c in classes if not files[c]]
    if empty:
        raise EdgeinfError(f"class folder {root / empty[0]} holds no images ({', '.join(IMAGE_SUFFIXES)}); "
                           "add images or remove the folder")
    pil = _pillow()
    x = np.stack([_read_image(pil, f, input_shape) for c in classes for f in files[c]])
    y = np.concatenate([np.full(len(files[c]), i, np.int64) for i, c in enumerate(classes)])
    data = from_arrays({"x": x, "y": y}, str(root), **split_options)
    return BuildData(**{**data.__dict__, "classes": tuple(classes)})


def _pillow():
    from edgeinf._lazy import require

    return require("PIL.Image", "reading an image folder (pip install 'edgeinf[build]' or pip install pillow)")


def _read_image(pil, path: Path, input_shape: Sequence[int]) -> np.ndarray:
    c, h, w = (int(s) for s in input_shape)
    try:
        with pil.open(path) as img:
            img = img.convert("L" if c == 1 else "RGB").resize((w, h), pil.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise EdgeinfError(f"cannot read the image {path} ({type(exc).__name__}: {exc}); remove or replace it") from None
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return arr.astype(np.float32) / np.float32(255.0)


def from_sequence(items: Any, **split_options: Any) -> BuildData:
    """BuildData from a sequence of ``(image, label)`` pairs (a list, a torch Dataset...), split per class.

    Images may be numpy arrays, torch tensors ([C, H, W] float) or PIL images (scaled to [0, 1])."""
    try:
        n = len(items)
    except TypeError:
        raise EdgeinfError(f"the data ({type(items).__name__}) has no length; pass a sequence or a torch Dataset "
                           "of (image, label) pairs") from None
    if n == 0:
        raise EdgeinfError("the data set is empty; pass at least one (image, label) pair per class and split")
    xs, ys = [], []
    for i in range(n):
        item = items[i]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise EdgeinfError(f"item {i} of the data is a {type(item).__name__}; each item must be (image, label)")
        xs.append(_one_image(item[0]))
        ys.append(int(item[1]))
    shapes = {a.shape for a in xs}
    if len(shapes) > 1:
        raise EdgeinfError(f"the data's images have different shapes {sorted(shapes)[:3]}; resize them to one shape")
    return from_arrays({"x": np.stack(xs), "y": np.array(ys)}, type(items).__name__, **split_options)


def _one_image(img: Any) -> np.ndarray:
    if hasattr(img, "detach"):
        img = img.detach().cpu().numpy()
    elif hasattr(img, "convert") and hasattr(img, "size"):  # a PIL image
        arr = np.asarray(img, dtype=np.uint8)
        return (arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)).astype(np.float32) / np.float32(255.0)
    arr = np.asarray(img)
    if arr.dtype == np.uint8:
        return as_images(arr[None], "an image")[0]
    return arr.astype(np.float32) if arr.ndim == 3 else arr.astype(np.float32)[None]


def load_data(data: Any, input_shape: Sequence[int] | None, val_fraction: float = 0.2, test_fraction: float = 0.2,
              seed: int = 0, min_per_class: int = 1) -> BuildData:
    """BuildData from a path (.npz or image folder), a dict of arrays, BuildData, or a sequence of pairs."""
    opts = {"val_fraction": val_fraction, "test_fraction": test_fraction, "seed": seed, "min_per_class": min_per_class}
    if isinstance(data, BuildData):
        return data
    if isinstance(data, dict):
        return from_arrays(data, "arrays", **opts)
    if isinstance(data, (str, Path)):
        path = Path(data)
        if path.is_dir():
            return load_image_folder(path, input_shape, **opts)
        if path.is_file():
            return load_npz(path, **opts)
        raise EdgeinfError(f"the data {path} does not exist; pass an .npz file or an image folder (one subfolder per class)")
    return from_sequence(data, **opts)
