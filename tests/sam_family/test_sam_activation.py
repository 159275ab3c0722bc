"""``trainer.activation_checkpointing=true`` for SAM / MedSAM (issue 22): the ViT blocks of the image encoder
are recomputed in the backward pass (it used to checkpoint 0 blocks: the inherited SAM2 hook looked for
a Hiera trunk). CPU, ViT-B at 64 px, random weights."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tests.conftest import compose_cfg

S = 64


def _batch(n: int = 2):
    from medseg.data.batch import ImageBatch

    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(n, S, S, dtype=torch.bool)
    masks[:, 10:40, 12:44] = True
    return ImageBatch(
        images=torch.randn(1, 3, S, S, generator=g), masks=masks,
        obj_img=torch.zeros(n, dtype=torch.long), obj_class=torch.ones(n, dtype=torch.long),
        boxes=torch.tensor([[12.0, 10.0, 44.0, 40.0]]).repeat(n, 1),
        points=torch.zeros(n, 0, 2), point_labels=torch.zeros(n, 0, dtype=torch.long),
        mask_prompts=torch.zeros(n, S, S), case_ids=["x"], spacing=torch.ones(1, 2),
    )  # fmt: skip


def _setup(tmp_path, checkpointing: bool):
    from hydra.utils import instantiate

    from medseg.run.app import build_task, prepare_model

    cfg = compose_cfg(
        "train_2d",
        ["model=sam_vit_b", f"model.image_size={S}", "model.checkpoint=null", "prompt=box",
         "loss=dice_bce", f"trainer.activation_checkpointing={str(checkpointing).lower()}"],
        tmp_path,
    )  # fmt: skip
    torch.manual_seed(0)
    model = instantiate(cfg.model.net).eval()  # eval: no dropout, both runs draw nothing random
    ctx = SimpleNamespace(train_samples=None, collate=None, label_names={0: "bg", 1: "fg"})
    task = build_task(cfg, ctx, "task_2d")
    n = prepare_model(cfg, task, model)
    return task, model, n


def _run(task, model, batch):
    model.zero_grad(set_to_none=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(
        lambda x: saved.append(x.numel() * x.element_size()) or x, lambda x: x
    ):
        loss = task.training_step(model, batch)["loss"]
    loss.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads, sum(saved)


def test_sam_vit_blocks_are_checkpointed_with_equal_loss_and_grads(tmp_path):
    """ViT-B: 12 blocks checkpointed, fewer saved-activation bytes, same loss, gradients and state-dict keys."""
    batch = _batch()
    task_a, model_a, n_a = _setup(tmp_path / "a", False)
    task_b, model_b, n_b = _setup(tmp_path / "b", True)
    assert n_a == 0 and n_b == 12  # ViT-B has 12 blocks
    assert list(model_a.state_dict()) == list(model_b.state_dict())
    model_b.load_state_dict(model_a.state_dict())
    loss_a, grads_a, saved_a = _run(task_a, model_a, batch)
    loss_b, grads_b, saved_b = _run(task_b, model_b, batch)
    assert loss_a == pytest.approx(loss_b, rel=1e-6)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 50
    top = max(g.abs().max().item() for g in grads_a.values())
    for k, g in grads_a.items():
        assert (grads_b[k] - g).abs().max().item() <= 1e-5 * g.abs().max().item() + 1e-7 * top, k
    assert saved_b < 0.8 * saved_a, (saved_a, saved_b)
