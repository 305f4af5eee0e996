"""Bring your own model: torchvision models trained here on real images, then the CLI alone to a running package.

For each model (resnet18 and mobilenet_v3_small, ``num_classes=10``): train on scikit-learn's digits
(real 8x8 scans, upsampled to ``--size`` pixels, 3 channels, [0, 1]) for a few epochs on the CPU,
save the state dict, then run, as subprocesses, exactly what a user would type:

    edgeinf build CKPT --arch torchvision.models:NAME --arch-kwargs '{"num_classes": 10}' --data digits.npz ...
    edgeinf profile PKG
    edgeinf run PKG --input test_x.npy --labels test_y.npy --branch full --budget-ms ...
    edgeinf run PKG ... --budget-ms <between the fastest and the full branch>   (the lookup table)

and report the full branch's test accuracy on onnxruntime against the torch model's own (in points)
and the wall time of every step and of every build stage. JSON to benchmarks/results/byo-<model>.json.

Usage: python benchmarks/bench_byo.py [--models resnet18,mobilenet_v3_small] [--epochs 6] [--size 32]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def digits_npz(path: Path, size: int, seed: int = 0) -> dict:
    """The digits as 3-channel [0, 1] float32 NCHW images, split per class into train / val / test."""
    from sklearn.datasets import load_digits

    from edgeinf.builder.data import stratified_split
    from edgeinf.zoo.digits import upsample

    raw = load_digits()
    x = np.repeat((upsample(raw.images, size) + 1.0) / 2.0, 3, axis=1).astype(np.float32)
    data = stratified_split(x, raw.target.astype(np.int64), 0.2, 0.2, seed)
    arrays = {f"{k}_{s}": getattr(data, f"{k}_{s}") for s in ("train", "val", "test") for k in ("x", "y")}
    np.savez(path, **arrays)
    return arrays


def train(name: str, arrays: dict, mean: list[float], std: list[float], epochs: int, max_s: float, seed: int):
    """Train torchvision ``name`` (num_classes=10) on the normalised training split; (model, log)."""
    import torch
    import torchvision

    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)(num_classes=10)
    m, s = torch.tensor(mean).reshape(1, -1, 1, 1), torch.tensor(std).reshape(1, -1, 1, 1)
    x, y = (torch.as_tensor(arrays["x_train"]) - m) / s, torch.as_tensor(arrays["y_train"])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * -(-len(x) // 64))
    gen, t0, done = torch.Generator().manual_seed(seed), time.perf_counter(), 0
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 64):
            idx = order[i:i + 64]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        done += 1
        print(f"  {name} epoch {done}/{epochs}: loss {float(loss.detach()):.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        if time.perf_counter() - t0 > max_s:
            break
    recalibrate_bn(model, x)
    return model, {"epochs": done, "train_s": round(time.perf_counter() - t0, 1), "bn_recalibrated": True}


def recalibrate_bn(model, x, batch_size: int = 128) -> None:
    """Re-estimate every BatchNorm's running statistics on the training inputs (cumulative average,
    no gradients), then eval mode: torchvision's MobileNetV3 uses momentum 0.01, so a few epochs
    leave its running statistics far from the activations and eval-mode accuracy at chance."""
    import torch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            model(x[i:i + batch_size])
    model.eval()


def torch_accuracy(model, x: np.ndarray, y: np.ndarray, mean, std) -> float:
    import torch

    m, s = torch.tensor(mean).reshape(1, -1, 1, 1), torch.tensor(std).reshape(1, -1, 1, 1)
    with torch.no_grad():
        logits = torch.cat([model((torch.as_tensor(x[i:i + 256]) - m) / s) for i in range(0, len(x), 256)])
    return float((logits.argmax(1).numpy() == y).mean())


def cli(*args: str) -> tuple[dict, float]:
    """Run ``edgeinf ARGS --json`` as a user would; (its JSON, wall seconds)."""
    cmd = [sys.executable, "-m", "edgeinf", "-q", *args, "--json"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout), round(wall, 2)


def bench_model(name: str, work: Path, npz: Path, arrays: dict, args) -> dict:
    mean = [round(float(v), 4) for v in arrays["x_train"].mean(axis=(0, 2, 3))]
    std = [round(float(v), 4) for v in arrays["x_train"].std(axis=(0, 2, 3))]
    model, log = train(name, arrays, mean, std, args.epochs, args.max_train_s, args.seed)
    acc_torch = torch_accuracy(model, arrays["x_test"], arrays["y_test"], mean, std)
    import torch

    ckpt, pkg = work / f"{name}.pt", work / f"{name}-pkg"
    torch.save(model.state_dict(), ckpt)
    record, build_s = cli("build", str(ckpt), "--arch", f"torchvision.models:{name}", "--arch-kwargs",
                          '{"num_classes": 10}', "--input-shape", f"3,{args.size},{args.size}", "--data", str(npz),
                          "--out", str(pkg), "--mean", ",".join(map(str, mean)), "--std", ",".join(map(str, std)),
                          "--threads", str(args.threads), "--exit-epochs", str(args.exit_epochs))
    prof, profile_s = cli("profile", str(pkg), "--threads", "1", "--repeat", "20", "--warmup", "3")
    held = record["held_out"]
    full, run_full_s = cli("run", str(pkg), "--input", held["x"], "--labels", held["y"], "--branch", "full",
                           "--budget-ms", "1000", "--threads", "1")
    ms = sorted(v["p50_ms"] for v in prof["branches"].values())
    budget = round(ms[0] + 0.5 * (ms[-1] - ms[0]), 3)
    lut, run_lut_s = cli("run", str(pkg), "--input", held["x"], "--labels", held["y"], "--budget-ms", str(budget),
                         "--threads", "1")
    acc_pkg = full["summary"]["accuracy"]
    return {"model": f"torchvision.models.{name}(num_classes=10)", "input_shape": [3, args.size, args.size],
            "training": {**log, "threads": torch.get_num_threads()}, "mean": mean, "std": std,
            "test_samples": held["samples"],
            "accuracy": {"torch_test": acc_torch, "package_full_branch_test_onnxruntime": acc_pkg,
                         "difference_points": round(100 * (acc_pkg - acc_torch), 3),
                         "build_record_torch": record["torch_accuracy"]},
            "cli_wall_s": {"build": build_s, "profile": profile_s, "run_full": run_full_s, "run_lut": run_lut_s},
            "build_stages_s": record["stages_s"], "branches": len(prof["branches"]),
            "profiled_ms": {"fastest_p50": ms[0], "slowest_p50": ms[-1]},
            "lut_run": {"budget_ms": budget, "accuracy": lut["summary"]["accuracy"],
                        "miss_rate": lut["summary"]["miss_rate"], "p50_ms": lut["summary"]["latency_ms"]["p50_ms"]},
            "full_run": {"p50_ms": full["summary"]["latency_ms"]["p50_ms"], "miss_rate": full["summary"]["miss_rate"]}}


def machine() -> dict:
    import onnxruntime
    import torch

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {"commit": commit or None, "host": platform.node(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "loadavg_1m": os.getloadavg()[0], "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "backend": "onnxruntime CPU (device steps), torch CPU (training, build)",
            "note": "a 2-core x86 VM shared with other work during the run: wall times are indicative"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet18,mobilenet_v3_small")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--max-train-s", type=float, default=400.0, help="stop training after the epoch that passes this")
    p.add_argument("--exit-epochs", type=int, default=20)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        npz = work / "digits.npz"
        arrays = digits_npz(npz, args.size, args.seed)
        for name in args.models.split(","):
            t0 = time.perf_counter()
            result = {"benchmark": "byo", "machine": machine(), **bench_model(name, work, npz, arrays, args),
                      "total_s": None}
            result["total_s"] = round(time.perf_counter() - t0, 1)
            result["machine"]["loadavg_1m_after"] = os.getloadavg()[0]
            out = Path(args.out) / f"byo-{name}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=2) + "\n")
            acc = result["accuracy"]
            print(f"{name}: torch test {acc['torch_test']:.4f}, package full branch {acc['package_full_branch_test_onnxruntime']:.4f} "
                  f"({acc['difference_points']:+.2f} points); build {result['cli_wall_s']['build']} s "
                  f"(stages {result['build_stages_s']}); profile {result['cli_wall_s']['profile']} s -> {out}")


if __name__ == "__main__":
    main()
