"""``edgeinf.build(model, data, config)``: a model and labelled data -> a verified package carrying its profile.

Stages, in order (:data:`STAGES`): data -> split -> exits (attached and trained, backbone
frozen) -> space -> quantize (per-block PTQ, calibrated on the user's training inputs) ->
profile (the validation split: correctness matrix, MACs, BitOPs, torch latency on this host) ->
export (blocks x bits, fused Pareto branches) -> the package. Every stage is timed; the record
goes into the package (``manifest["build_record"]``) and beside it (``<out>.build/build.json``).

Resumption: the work dir ``<out>.build/cache/<key>/`` keeps each finished stage's output (the
exit heads, the profile), keyed by a hash of the model's weights, the data and the config; a
build that failed resumes from its last finished stage. Stages kept in memory only (split,
space, quantize) are deterministic and are redone.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeinf import __version__, _atomic
from edgeinf.builder.config import BuildConfig
from edgeinf.builder.data import BuildData, load_data
from edgeinf.errors import EdgeinfError
from edgeinf.progress import Progress

log = logging.getLogger("edgeinf")
STAGES = ("data", "split", "exits", "space", "quantize", "profile", "export")
RECORD = "build.json"


@dataclass
class BuildResult:
    """A finished build: the package, the data it was built from, and the stage record."""

    package: Any
    data: BuildData
    record: dict[str, Any]
    work_dir: Path
    model: Any = None

    @property
    def root(self) -> Path:
        return Path(self.package.root)


@dataclass
class _Run:
    """State shared by the stages of one build."""

    config: BuildConfig
    out: Path
    work: Path
    command: str | None
    force: bool = False
    model: Any = None
    data: BuildData | None = None
    cache: Path | None = None
    done: dict[str, Any] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    resumed: list[str] = field(default_factory=list)
    profiled: Any = None
    package: Any = None
    exit_losses: dict = field(default_factory=dict)


# -- --out --------------------------------------------------------------------------------------
def work_dir(out: Path) -> Path:
    """The build's work dir beside the package: ``<out>.build``."""
    return out.with_name(out.name + ".build")


# -- the pipeline -------------------------------------------------------------------------------
def build(model: Any, data: Any, config: BuildConfig | None = None, out: str | Path = "package", *,
          arch: str | None = None, arch_kwargs: Any = None, adapter: str | None = None,
          command: str | None = None, force: bool = False) -> BuildResult:
    """Build a package from ``model`` and labelled ``data``.

    Args:
        model: a torch model (split by its adapter), a SplitModel, a zoo name, or a state-dict
            checkpoint path (with ``arch`` and ``arch_kwargs``).
        data: an .npz path, an image folder (one subfolder per class), a dict of arrays,
            BuildData, or a sequence / torch Dataset of ``(image, label)`` pairs.
        config: None = ``BuildConfig()``.
        out: the package directory (new, or an existing package: replaced atomically).
        command: the command line recorded in the manifest.
        force: replace an ``out`` that is not a package (default: refuse before any work).

    Example:
        >>> import torchvision, edgeinf
        >>> pkg = edgeinf.build(torchvision.models.resnet18(num_classes=10), "images/",
        ...                     edgeinf.BuildConfig(input_shape=(3, 64, 64)), out="pkg").package
    """
    from edgeinf.costs import TorchThreads

    config = BuildConfig() if config is None else config
    out = _atomic.check_out(out, "package", force=force, flag="--out")  # new, or a package to replace
    run = _Run(config, out, work_dir(out), command, force=force)
    t_all = time.perf_counter()
    with TorchThreads(config.threads), Progress("build", total=len(STAGES)) as bar:
        for name in STAGES:
            t0 = time.perf_counter()
            log.info("edgeinf build: %s", name)
            _STAGE_FNS[name](run, {"model": model, "data": data, "arch": arch, "arch_kwargs": arch_kwargs,
                                   "adapter": adapter})
            run.timings_s[name] = round(time.perf_counter() - t0, 3)
            if run.cache is not None:
                _save_state(run)
            bar.update(1, stage=name)
    run.timings_s["total"] = round(time.perf_counter() - t_all, 3)
    record = _finish(run)
    return BuildResult(run.package, run.data, record, run.work, run.model)


def _stage_data(run: _Run, inputs: dict) -> None:
    """Load the model (a bad checkpoint fails here, before anything is written) and the data."""
    from edgeinf.builder.source import load_model

    cfg = run.config
    run.model = load_model(inputs["model"], inputs["arch"], inputs["arch_kwargs"], inputs["adapter"],
                           cfg.input_shape, seed=cfg.seed)
    if cfg.input_shape is not None and tuple(run.model.input_shape) != cfg.input_shape:
        raise EdgeinfError(f"the model takes inputs of shape {list(run.model.input_shape)}, not the "
                           f"--input-shape {list(cfg.input_shape)}; drop --input-shape or build the matching model")
    run.data = load_data(inputs["data"], run.model.input_shape, cfg.val_fraction, cfg.test_fraction, cfg.seed,
                         cfg.min_per_class)
    run.data.check(run.model.input_shape, run.model.num_classes)


def _stage_split(run: _Run, inputs: dict) -> None:
    """Normalisation folded into the stem, the name set; the cache key from weights + data + config."""
    from edgeinf.builder.source import with_normalisation

    cfg = run.config
    with_normalisation(run.model, cfg.mean, cfg.std)
    if cfg.name:
        run.model.name = cfg.name
    run.cache = run.work / "cache" / _key(run)[:16]
    state = run.cache / "stages.json"
    if state.is_file():
        saved = json.loads(state.read_text())
        run.done = {k: v for k, v in saved.get("done", {}).items() if k in STAGES}


def _key(run: _Run) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"config": run.config.to_dict(), "edgeinf": __version__, "name": run.model.name},
                        sort_keys=True).encode())
    for k, v in run.model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    h.update(run.data.digest().encode())
    return h.hexdigest()


def _stage_exits(run: _Run, inputs: dict) -> None:
    """Exit heads attached and trained on the training split (restored when this stage finished before)."""
    import torch

    from edgeinf.builder.source import default_exits
    from edgeinf.builder.stages import train_exit_heads

    cached = run.cache / "exits.pt"
    if "exits" in run.done and cached.is_file():
        state = torch.load(cached, map_location="cpu", weights_only=True)
        for p in sorted({int(k.split(".")[1]) for k in state if k.startswith("exits.")}):
            if str(p) not in run.model.exits:
                run.model.add_exit(p)
        run.model.load_state_dict(state)
        run.model.eval()
        run.resumed.append("exits")
        return
    cfg = run.config
    points = cfg.exits if cfg.exits is not None else ([] if run.model.exit_points() else default_exits(run.model))
    if cfg.skip_finetune_epochs:
        from edgeinf.zoo.training import finetune_skip_robust

        finetune_skip_robust(run.model, run.data.x_train, run.data.y_train, cfg.skip_finetune_epochs, seed=cfg.seed)
    run.exit_losses = train_exit_heads(run.model, list(points), run.data.x_train, run.data.y_train,
                                       cfg.exit_epochs, cfg.seed)
    if cfg.skip_finetune_epochs and run.model.exit_points():
        from edgeinf.zoo.training import train_exits_skip_robust

        train_exits_skip_robust(run.model, run.data.x_train, run.data.y_train, cfg.skip_finetune_epochs, seed=cfg.seed)
    run.model.eval()
    with _atomic.atomic_path(cached) as tmp:
        torch.save(run.model.state_dict(), tmp)
    run.done["exits"] = {"points": run.model.exit_points()}


def _stage_space(run: _Run, inputs: dict) -> None:
    from edgeinf.builder.stages import make_space

    run.done.setdefault("space", {})
    run.profiled = make_space(run.model, run.config.bits, run.config.monotone_bits)


def _stage_quantize(run: _Run, inputs: dict) -> None:
    """Per-block PTQ at every bit level of the sampled branches, calibrated on the training inputs."""
    from edgeinf.builder.stages import profiled_branches, quantize

    cfg = run.config
    space = run.profiled
    variants = quantize(run.model, cfg.quant(), run.data.x_train, kernels="auto")
    branches = profiled_branches(space, cfg.max_branches, cfg.seed)
    variants.prepare(branches)
    run.profiled = (space, variants, branches)


def _stage_profile(run: _Run, inputs: dict) -> None:
    """Profile the sampled branches on the validation split (restored when finished before)."""
    import torch

    from edgeinf.builder.source import check_profile
    from edgeinf.costs import LatencyConfig
    from edgeinf.profile_format import load_profile, save_profile
    from edgeinf.host_profiling import ProfileConfig, profile_space

    cfg = run.config
    path = run.cache / "profile.json"
    if "profile" in run.done and path.is_file():
        profile, _ = load_profile(path)
        check_profile(profile, run.model, f"the cached profile {path}")
        run.resumed.append("profile")
        return
    space, variants, branches = run.profiled
    latency = LatencyConfig(warmup=2, repeats=cfg.host_latency_repeats, threads=1) if cfg.host_latency_repeats else None
    pconfig = ProfileConfig(max_branches=cfg.max_branches, seed=cfg.seed, latency=latency, data_name="build-val")
    profile, correct = profile_space(space, variants, torch.as_tensor(run.data.x_val), torch.as_tensor(run.data.y_val),
                                     pconfig, branches=branches)
    save_profile(path, profile, correct)
    run.done["profile"] = {"branches": len(branches)}


def _stage_export(run: _Run, inputs: dict) -> None:
    """Blocks x bits and the fused Pareto branches into ``out``, with the profile and the build record."""
    from edgeinf.builder.stages import check_inputs, export

    cfg = run.config
    run.package = export(run.model, run.out, quant=cfg.quant(), bit_levels=cfg.bits,
                         profile_path=run.cache / "profile.json", check_x=check_inputs(run.model, run.data.x_val),
                         fused=cfg.fused, pareto_on=cfg.pareto_on, calib_x=run.data.x_train, command=run.command,
                         force=run.force)


_STAGE_FNS = {"data": _stage_data, "split": _stage_split, "exits": _stage_exits, "space": _stage_space,
              "quantize": _stage_quantize, "profile": _stage_profile, "export": _stage_export}


def _save_state(run: _Run) -> None:
    _atomic.write_json(run.cache / "stages.json", {"done": run.done, "timings_s": run.timings_s})


def _finish(run: _Run) -> dict[str, Any]:
    """The build record (into the manifest and ``<out>.build/build.json``) and the held-out split as .npy."""
    from edgeinf.package import load_package, update_manifest

    held = _save_held_out(run)
    record = {"edgeinf": __version__, "config": run.config.to_dict(), "stages_s": dict(run.timings_s),
              "resumed": list(run.resumed), "data": {"source": run.data.source, "sizes": run.data.sizes,
                                                     "classes": list(run.data.classes or ()),
                                                     "sample_shape": list(run.data.sample_shape)},
              "model": {"name": run.model.name, "blocks": len(run.model.blocks), "exits": run.model.exit_points(),
                        "num_classes": int(run.model.num_classes)},
              "torch_accuracy": _torch_accuracy(run), "held_out": held, "package": str(run.out),
              "work_dir": str(run.work), "cache": str(run.cache)}
    update_manifest(run.out, build_record=record)
    run.package = load_package(run.out)
    _atomic.write_json(run.work / RECORD, record)
    return record


def _save_held_out(run: _Run) -> dict[str, Any]:
    """The test split (else val) as ``<out>.build/<split>_x.npy`` / ``_y.npy``, for edgeinf run / simulate."""
    split = "test" if run.data.x_test is not None else "val"
    x, y = getattr(run.data, f"x_{split}"), getattr(run.data, f"y_{split}")
    xp, yp = run.work / f"{split}_x.npy", run.work / f"{split}_y.npy"
    for path, arr in ((xp, x), (yp, y)):
        with _atomic.atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(arr))
    return {"split": split, "x": str(xp), "y": str(yp), "samples": int(len(y))}


def _torch_accuracy(run: _Run) -> dict[str, float]:
    """The fp32 full model's accuracy (torch) on val and, if present, test: what the package should reproduce."""
    from edgeinf.exits import accuracy

    out = {"val": accuracy(run.model, run.data.x_val, run.data.y_val)}
    if run.data.x_test is not None:
        out["test"] = accuracy(run.model, run.data.x_test, run.data.y_test)
    return out
