"""The demo's export stage: a profiled model -> DIR/package with the profile's branch table."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from edgeinf.exporters.models import export_demo_package  # noqa: E402
from edgeinf.profile_format import load_profile, save_profile  # noqa: E402
from edgeinf.host_profiling import ProfileConfig, profile_space  # noqa: E402
from edgeinf.quant import BlockVariants, QuantConfig  # noqa: E402
from edgeinf.space import BranchSpace  # noqa: E402
from edgeinf.zoo.nets import ResNetConfig, digits_resnet  # noqa: E402


def test_demo_stage_exports_the_profiled_model(tmp_path):
    torch.manual_seed(0)
    model = digits_resnet(ResNetConfig(size=16, widths=(8,), depths=(3,), exits=(0,)))
    model.add_exit(0)
    model.eval()
    x, y = torch.randn(32, 1, 16, 16), torch.randint(0, 10, (32,))
    space = BranchSpace(model, bit_levels=(32, 4))
    profile, correct = profile_space(space, BlockVariants(model, QuantConfig(group_size=32)), x, y,
                                     ProfileConfig(max_branches=8, latency=None))
    path = save_profile(tmp_path / "profile.json", profile, correct)
    ctx = SimpleNamespace(models={"net": model}, results={"net": {"profile_path": path}},
                          data=SimpleNamespace(x_val=x.numpy()), out_dir=tmp_path)
    pkg = export_demo_package(ctx, name="net")
    assert pkg.root == tmp_path / "package" and ctx.results["net"]["package"] == str(pkg.root)
    assert pkg.manifest["bit_levels"] == [32, 4]
    rows = {r["id"]: r for r in pkg.branches}
    assert rows.keys() == {r["id"] for r in profile["branches"]}
    for r in profile["branches"]:
        assert rows[r["id"]]["accuracy"] == r["accuracy"] and rows[r["id"]]["macs"] == r["macs"]
    pareto = set(profile["pareto"]["bitops"])
    assert {i for i, r in rows.items() if r["fused"]} == pareto
    embedded, matrix = load_profile(pkg.path("profile"))
    assert embedded["branches"] == profile["branches"] and np.array_equal(matrix, correct)
