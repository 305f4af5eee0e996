"""AdaInf's content-aware scheduler: budget-driven keep probabilities, branch mapping, persistence."""
from __future__ import annotations

import numpy as np
import pytest

from edgeinf.branch import Branch
from edgeinf.errors import EdgeinfError
from edgeinf.learned.content import ContentAware, pool
from edgeinf.learned.train_content import ContentTrainConfig
from edgeinf.runtime.table import BranchInfo

torch = pytest.importorskip("torch")


def _layers(n_blocks, n_exits, feat=2, seed=0):
    rng = np.random.default_rng(seed)
    out = n_blocks - 1 + n_exits + 1
    return {"budget": [(rng.normal(size=(1, 3)).astype(np.float32), np.zeros(3, np.float32))],
            "head": [(rng.normal(size=(feat + 3, 4)).astype(np.float32), np.zeros(4, np.float32)),
                     (rng.normal(size=(4, out)).astype(np.float32), np.zeros(out, np.float32))]}


def test_pool_shapes():
    assert pool(np.ones((2, 3, 4, 4))).shape == (2, 3)
    assert pool(np.ones((2, 5, 7))).shape == (2, 7)


def test_pick_maximises_the_mask_likelihood_by_hand():
    ca = ContentAware(_layers(4, 1), 4, (1,), np.ones(4, np.float32), 4.0)
    branches = [BranchInfo(Branch((0, 1, 2, 3)), .9, 4.0), BranchInfo(Branch((0, 1, 3)), .8, 3.0),
                BranchInfo(Branch((0, 1), 1), .5, 2.0),
                BranchInfo(Branch((1,), 1), .5, 1.0)]  # no block 0: never picked
    keep = np.array([[0.9, 0.2, 0.9]])   # blocks 1, 2, 3
    exit_p = np.array([[0.3, 0.7]])      # exit 1, final head
    allowed = np.ones(4, bool)
    # log-likelihoods: a: .9*.2*.9*.7 = .1134, b: .9*.8*.9*.7 = .4536, c: .9*.3 = .27
    assert ca.pick(keep, exit_p, branches, allowed) == 1
    allowed[1] = False
    assert ca.pick(keep, exit_p, branches, allowed) == 2
    with pytest.raises(EdgeinfError, match="keeps block 0"):
        ca.pick(keep, exit_p, branches, np.array([False, False, False, True]))


def test_save_load_gives_identical_predictions(tmp_path):
    ca = ContentAware(_layers(4, 1), 4, (1,), np.ones(4, np.float32), 4.0, {"seed": 0})
    again = ContentAware.load(ca.save(tmp_path / "c.npz"))
    f = np.random.default_rng(1).normal(size=(5, 2)).astype(np.float32)
    for a, b in zip(ca.predict(f, 2.0), again.predict(f, 2.0)):
        np.testing.assert_array_equal(a, b)


class _Tiny(torch.nn.Module):
    """4 linear blocks on 2-d inputs (block 2 swaps the coordinates, the others are identities),
    an exit after block 1 that knows nothing, and a final head that is right iff block 2 ran:
    keeping block 2 is worth ~log 2 of cross-entropy and costs a quarter of the model."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Identity()
        self.blocks = torch.nn.ModuleList([torch.nn.Linear(2, 2, bias=False) for _ in range(4)])
        with torch.no_grad():
            for i, blk in enumerate(self.blocks):
                blk.weight.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0]]) if i == 2 else torch.eye(2))
            self.exits = torch.nn.ModuleDict({"1": torch.nn.Linear(2, 2)})
            self.exits["1"].weight.zero_()
            self.exits["1"].bias.zero_()
            self.head = torch.nn.Linear(2, 2)
            self.head.weight.copy_(torch.tensor([[0.0, -10.0], [0.0, 10.0]]))
            self.head.bias.zero_()

    def exit_points(self):
        return [1]

    def skippable(self):
        return [True] * 4


def test_training_is_seeded_and_a_tight_budget_drops_blocks():
    from edgeinf.learned.train_content import train_content

    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    cfg = ContentTrainConfig(epochs=30, lam=20.0, lr=1e-2, batch_size=32, seed=3)
    model = _Tiny()
    a = train_content(model, x, y, [1.0] * 4, cfg)
    b = train_content(_Tiny(), x, y, [1.0] * 4, cfg)
    with torch.no_grad():
        f = pool(model.blocks[0](torch.as_tensor(x)).numpy())
    np.testing.assert_array_equal(a.predict(f, 1.0)[0], b.predict(f, 1.0)[0])
    # a loose budget keeps block 2 (keep column 1) and takes the final head; the tighter the
    # budget, the more the (useless but cheap) exit after block 1 is taken instead
    keep_loose, exit_loose = a.predict(f, 4.0)
    _, exit_tight = a.predict(f, 1.0)
    assert keep_loose[:, 1].mean() > 0.5 and exit_loose[:, 1].mean() > 0.5
    assert exit_tight[:, 0].mean() > exit_loose[:, 0].mean() + 0.1


def test_inference_modules_import_no_training_code():
    """The device-side learned modules never import torch, sklearn or a training module (even lazily)."""
    import ast
    from pathlib import Path

    import edgeinf.learned as pkg

    root = Path(pkg.__file__).parent
    for name in ("content", "gates", "next_step", "paths"):
        tree = ast.parse((root / f"{name}.py").read_text())
        mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        mods |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        bad = {m for m in mods if m.split(".")[0] in ("torch", "sklearn", "onnx")
               or m.split(".")[-1].startswith(("train_", "finetune", "pipeline", "evaluate"))}
        assert not bad, f"{name}.py imports {bad}"
