"""AdaInf's backbone option: LoRA adapters (exact merge), full fine-tuning, the caller's model untouched."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_learned_content import _Tiny  # noqa: E402

from edgeinf.errors import EdgeinfError  # noqa: E402
from edgeinf.learned.train_content import ContentTrainConfig, train_content  # noqa: E402
from edgeinf.learned.finetune import LoRA, add_lora, finetune_content, merge_lora  # noqa: E402


@pytest.mark.parametrize("layer", [torch.nn.Linear(5, 3), torch.nn.Conv2d(4, 6, 3, stride=2, padding=1)])
def test_lora_starts_at_the_base_layer_and_merges_exactly(layer):
    torch.manual_seed(0)
    x = torch.randn(2, 5) if isinstance(layer, torch.nn.Linear) else torch.randn(2, 4, 7, 7)
    want = layer(x).detach()
    adapter = LoRA(layer, rank=2)
    torch.testing.assert_close(adapter(x), want)          # B = 0: the original output
    with torch.no_grad():
        adapter.b.normal_()
    y = adapter(x).detach()
    assert not torch.allclose(y, want)
    merged = adapter.merged()
    assert merged is layer
    torch.testing.assert_close(merged(x), y, rtol=1e-5, atol=1e-5)


def test_add_and_merge_lora_keep_the_architecture():
    model = _Tiny()
    params = add_lora(model.blocks, rank=1)
    assert len(params) == 2 * 3 and all(isinstance(b, LoRA) for b in model.blocks[1:])
    assert merge_lora(model) == 3
    assert all(type(b) is torch.nn.Linear for b in model.blocks)


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_finetuning_trains_a_copy_after_block_0(mode):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    model = _Tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = ContentTrainConfig(epochs=5, lam=1.0, lr=1e-2, batch_size=32, seed=1, finetune=mode, lora_rank=2,
                             backbone_lr=1e-2)
    content, tuned = finetune_content(model, x, y, [1.0] * 4, cfg)
    for k, v in model.state_dict().items():   # the caller's model is untouched
        assert torch.equal(v, before[k]), k
    after = tuned.state_dict()
    assert set(after) == set(before)           # same architecture: adapters merged away
    assert torch.equal(after["blocks.0.weight"], before["blocks.0.weight"])  # block 0 feeds the features
    assert any(not torch.equal(after[k], before[k]) for k in after if k.startswith("blocks.") and k != "blocks.0.weight")
    assert content.meta["finetune"] == mode and all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in tuned.parameters())


def test_frozen_training_leaves_no_gradients_on_the_model_and_bad_options_are_refused():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 2)).astype(np.float32)
    model = _Tiny()
    train_content(model, x, (x[:, 0] > 0).astype(np.int64), [1.0] * 4, ContentTrainConfig(epochs=1, batch_size=16))
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    with pytest.raises(EdgeinfError, match="finetune must be one of"):
        ContentTrainConfig(finetune="partial")
    with pytest.raises(EdgeinfError, match="lora_rank"):
        ContentTrainConfig(lora_rank=0)
    with pytest.raises(EdgeinfError, match="'full' or 'lora'"):
        finetune_content(model, x, x[:, 0] > 0, [1.0] * 4, ContentTrainConfig())


def test_a_zoo_architecture_checkpoint_comes_with_its_validation_split(tmp_path):
    from edgeinf import zoo
    from edgeinf.exporters.models import load_source

    model = zoo.build("digits-resnet")
    torch.save(model.state_dict(), tmp_path / "tuned.pt")
    source = load_source(str(tmp_path / "tuned.pt"), arch="digits-resnet")
    assert source.x is not None and len(source.x) == len(source.y) == 360
    for k, v in source.model.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k
