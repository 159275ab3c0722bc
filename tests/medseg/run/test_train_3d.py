"""3D training (SAM2 propagation through clips of slices) through the shared engine: output contract on
the three volume layouts, frozen parts, exact resume, DDP, overfitting."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medseg.eval.tables import read_csv as _rows
from tests.conftest import CLI_SMALL, run_entry, run_torchrun
from tests.conftest import checkpoint_weights as _weights
from tests.medseg.helpers import changed_keys, full_part_resumed, init_weights, untimed_rows

FAST_3D = ["func_3d.video_length=4", "trainer.batch_size=1"]


@pytest.mark.parametrize("layout", ["nnunet", "btcv", "npz"])
def test_two_steps_output_contract(layout, data_root, tmp_path):
    out = tmp_path / "run"
    # the npz tree holds 3 cases, which the default ratios split 1/1/1: give 2 training volumes for 2 steps
    split = ["dataset.split.train=[CT_synth_000,CT_synth_001]", "dataset.split.val=[CT_synth_002]"]
    cfg, _ = run_entry(
        "train_3d",
        [
            f"dataset={layout}",
            f"dataset.root={data_root / layout}",
            *FAST_3D,
            *(split if layout == "npz" else []),
        ],
        out,
    )
    for name in ("checkpoint_last.pth", "checkpoint_best.pth", "metrics.csv", "val_cases.csv", "splits.json"):
        assert (out / name).is_file(), name
    rows = _rows(out / "metrics.csv")
    assert len(rows) == 1 and rows[0]["step"] == "2", rows
    assert float(rows[0]["train/loss"]) > 0
    assert 0.0 <= float(rows[0]["val/dice"]) <= 1.0
    splits = json.loads((out / "splits.json").read_text(encoding="utf-8"))
    assert splits["train"] and splits["val"] and not set(splits["train"]) & set(splits["val"])
    ck = torch.load(out / "checkpoint_last.pth", map_location="cpu", weights_only=True)
    assert (
        ck["step"] == 2
        and ck["model_cfg"]["variant"] == "sam2.1_hiera_t"
        and ck["model_cfg"]["image_size"] == 64
    )
    assert ck["splits"] == splits
    # one row per validated case x organ, each with a volumetric Dice and HD95
    cases = _rows(out / "val_cases.csv")
    n_val = min(len(splits["val"]), int(cfg.trainer.limit_val_batches))
    organs = {r["class_name"] for r in cases}
    assert organs and len(cases) == n_val * len(organs)
    assert {r["case_id"] for r in cases} == set(splits["val"][:n_val])
    assert len({(r["case_id"], r["class_name"]) for r in cases}) == len(cases)
    assert {"dice", "iou", "hd95", "status"} <= set(cases[0])
    scored = [r for r in cases if r["status"] == "ok"]
    assert scored and all(r["hd95"] != "" and float(r["hd95"]) >= 0 for r in scored)
    unit = {"nnunet": "mm", "btcv": "voxel", "npz": "mm"}[layout]  # BTCV JPEG slices have no spacing
    assert {r["hd95_unit"] for r in cases} == {unit} and f"val/hd95_{unit}" in rows[0]


def test_memory_only_trains_memory_attention_only(data_root, tmp_path):
    out = tmp_path / "run"
    run_entry(
        "train_3d",
        [
            f"dataset.root={data_root / 'nnunet'}",
            "model.trainable=memory_only",
            "seed=3",
            "trainer.limit_train_batches=1",
            "optim.lr=1e-3",
            *FAST_3D,
        ],
        out,
    )
    init = init_weights(3)
    after = _weights(out / "checkpoint_last.pth")
    assert set(after) == set(init)
    changed = changed_keys(after, init)
    assert any(k.startswith("memory_attention.") for k in changed), sorted(changed)[:5]
    frozen = [
        k for k in after if k.startswith(("image_encoder.", "sam_mask_decoder.", "sam_prompt_encoder."))
    ]
    assert frozen and not changed & set(frozen), sorted(changed & set(frozen))[:5]


def test_resume_is_exact(data_root, tmp_path):
    common = [
        f"dataset.root={data_root / 'nnunet'}",
        "trainer.limit_train_batches=1",
        "optim.lr=1e-3",
        "seed=7",
        "func_3d.reverse_prob=0.5",
        *FAST_3D,
    ]
    full, part, resumed = full_part_resumed("train_3d", common, tmp_path)
    assert len(_rows(part / "metrics.csv")) == 1
    a, b = _weights(full / "checkpoint_last.pth"), _weights(resumed / "checkpoint_last.pth")
    bad = [k for k in a if not torch.allclose(a[k].float(), b[k].float(), atol=1e-6)]
    assert not bad, bad[:5]
    init = _weights(part / "checkpoint_last.pth")
    assert any(not torch.equal(a[k], init[k]) for k in a if k.startswith("memory_attention.")), (
        "second epoch did not change the memory attention"
    )
    ra, rb = untimed_rows(full / "metrics.csv"), untimed_rows(resumed / "metrics.csv")
    assert len(ra) == 2
    assert ra == rb
    assert (resumed / "splits.json").read_text(encoding="utf-8") == (full / "splits.json").read_text(
        encoding="utf-8"
    )


def test_torchrun_two_cpu_processes(data_root, tmp_path):
    """3 training volumes / (2 processes x batch 1) = 1 step per epoch: 2 epochs = 2 steps."""
    out = tmp_path / "ddp"
    r = run_torchrun(
        "train_3d.py",
        f"dataset.root={data_root / 'nnunet'}",
        *CLI_SMALL,
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        *FAST_3D,
        "trainer.progress_bar=false",
        "logger=none",
        f"hydra.run.dir={out}",
        timeout=500,
        env={"OMP_NUM_THREADS": "1"},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    ck = torch.load(out / "checkpoint_last.pth", map_location="cpu", weights_only=True)
    assert ck["step"] == 2 and ck["epoch"] == 2
    rows = _rows(out / "metrics.csv")
    assert [r["step"] for r in rows] == ["1", "2"] and all(r["val/dice"] != "" for r in rows)
    # both ranks closed the process group after a barrier (a rank that exits with it up can abort in
    # gloo's destructor while its peer still writes: "terminate called without an active exception")
    log = next(out.glob("*.log")).read_text(encoding="utf-8")
    assert log.count("process group closed") == 2, log[-2000:]


@pytest.mark.slow
def test_overfit_two_volumes(tmp_path):
    """Train and score the same 2 volumes (a case may not sit in two splits: score the train split).
    30 steps of 4-slice clips; about 2-3 minutes on 2 CPU cores."""
    from medseg.data import synthetic

    root = synthetic.write_nnunet(tmp_path / "nn2", n_cases=2, depth=8, size=64, n_organs=1, n_test=0)
    out = tmp_path / "run"
    run_entry(
        "train_3d",
        [
            f"dataset.root={root}",
            "dataset.split.train=[case_000,case_001]",
            "dataset.split.val=[]",
            "dataset.split.test=[]",
            "eval_split=train",
            "prompt.jitter_px=0",
            "prompt.jitter_frac=0",
            "optim.lr=1e-3",
            "scheduler=constant",
            "trainer.max_epochs=15",
            "trainer.val_freq=5",
            "trainer.val_before_training=true",
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=2",
            "trainer.batch_size=1",
            "func_3d.video_length=4",
        ],
        out,
    )
    dice = [float(r["val/dice"]) for r in _rows(out / "metrics.csv") if r.get("val/dice")]
    assert len(dice) == 4 and dice[0] < 0.5, dice  # untrained, then after 10, 20 and 30 steps
    assert max(dice[1:]) > 0.7, dice  # reached 0.77 after 10 steps when written (lr 1e-3, 64 px)


def _clip_batch_and_task(data_root, tmp_path, overrides):
    from medseg.run.app import build_task
    from medseg.run.context import prepare_data
    from sam2_train import build_sam2_model
    from tests.conftest import SMALL, compose_cfg

    cfg = compose_cfg(
        "train_3d",
        [*SMALL, f"dataset.root={data_root / 'nnunet'}", "func_3d.video_length=4", *overrides],
        tmp_path,
    )
    ctx = prepare_data(cfg, tmp_path, mode="3d")
    task = build_task(cfg, ctx, "task_3d")
    rng = np.random.default_rng(3)
    batch = task.collate([task.train_dataset.get(i, rng) for i in range(len(task.train_dataset))])
    torch.manual_seed(0)
    model = build_sam2_model("sam2.1_hiera_t", image_size=64)
    with torch.no_grad():  # objects present, so masks and their gradients are not constant
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.add_(3.0)
    return task, batch, model.eval()  # eval modules: no dropout, so both runs draw nothing random


def _loss_and_grads(task, model, batch):
    model.zero_grad(set_to_none=True)
    parts = task.training_step(model, batch)
    parts["loss"].backward()
    return float(parts["loss"].detach()), {
        n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
    }


def _assert_grads_close(got: dict, ref: dict, *, rel: float, floor: float) -> None:
    """Same parameters with gradients, each within ``rel`` of its tensor's largest entry plus ``floor``
    of the largest gradient overall (entries of ~1e-10 are pure rounding)."""
    assert got.keys() == ref.keys()
    top = max(g.abs().max().item() for g in ref.values())
    for n, g in ref.items():
        assert (got[n] - g).abs().max().item() <= rel * g.abs().max().item() + floor * top, n


def test_batched_clips_step_equals_clip_by_clip(data_root, tmp_path):
    """func_3d.batch_clips=true (one propagation for all clips) and false (one per clip): same loss and
    gradients (1e-4 of each tensor's largest entry + 1e-6 of the largest gradient overall: batched
    matmuls sum in another order, and some parameters get gradients of ~1e-10, pure rounding)."""
    task, batch, model = _clip_batch_and_task(data_root, tmp_path, [])
    assert len(batch.images) >= 2 and task.batch_clips
    assert len({len(ids) for ids in batch.obj_ids}) >= 1
    loss_b, grads_b = _loss_and_grads(task, model, batch)
    task.batch_clips = False
    loss_s, grads_s = _loss_and_grads(task, model, batch)
    assert loss_b == pytest.approx(loss_s, rel=1e-5)
    assert grads_b.keys() == grads_s.keys() and len(grads_b) > 100
    _assert_grads_close(grads_b, grads_s, rel=1e-4, floor=1e-6)


def test_encoder_activation_checkpointing_gives_equal_gradients(data_root, tmp_path):
    """Checkpointed Hiera blocks: same loss and gradients (relative 1e-5), same state-dict keys, and
    fewer tensors saved for the backward pass."""
    from sam2_train import set_activation_checkpointing

    task, batch, model = _clip_batch_and_task(data_root, tmp_path, [])
    keys = list(model.state_dict())

    def run():
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda x: saved.append(x.numel()) or x, lambda x: x):
            loss, grads = _loss_and_grads(task, model, batch)
        return loss, grads, sum(saved)

    loss_a, grads_a, saved_a = run()
    assert set_activation_checkpointing(model, True) == 12  # Hiera-T has 12 blocks
    loss_b, grads_b, saved_b = run()
    set_activation_checkpointing(model, False)
    assert list(model.state_dict()) == keys
    assert loss_a == pytest.approx(loss_b, rel=1e-6)
    _assert_grads_close(grads_b, grads_a, rel=1e-5, floor=1e-7)
    assert saved_b < 0.7 * saved_a, (saved_a, saved_b)


def test_training_clips_use_whole_volume_intensity_statistics(data_root, tmp_path):
    """MRI percentile windows (and min-max) of a clip come from its whole volume, as in validation."""
    from medseg.run.app import build_task
    from medseg.run.context import prepare_data
    from tests.conftest import SMALL, compose_cfg

    cfg = compose_cfg(
        "train_3d",
        [
            *SMALL,
            f"dataset.root={data_root / 'nnunet'}",
            "func_3d.video_length=3",
            "dataset.intensity.modality=mri",
        ],
        tmp_path,
    )
    ctx = prepare_data(cfg, tmp_path, mode="3d")
    task = build_task(cfg, ctx, "task_3d")
    clips = task.train_dataset
    case = ctx.train_cases[0]
    whole = ctx.val_transform(case)["image"]  # validation: the whole volume
    clip = clips.get(0, np.random.default_rng(0))["image"]
    T = clip.shape[0]
    diffs = [(whole[s : s + T] - clip).abs().max().item() for s in range(whole.shape[0] - T + 1)]
    assert min(diffs) <= 1e-5, diffs
    start = int(np.argmin(diffs))
    per_clip = ctx.val_transform(dict(case, image=np.asarray(case["image"])[start : start + T], label=None))
    assert (per_clip["image"] - clip).abs().max().item() > 1e-3  # the clip's own statistics differ


def test_clips_of_different_lengths_run_in_groups(data_root, tmp_path):
    """A volume shorter than func_3d.video_length gives a shorter clip: clips are grouped by length,
    and the step equals the clip-by-clip step."""
    from func_3d.task import ClipBatch

    task, batch, model = _clip_batch_and_task(data_root, tmp_path, [])
    # cut one clip just after its last prompted frame (every object keeps its prompt)
    T = batch.images[0].shape[0]
    b = next(b for b in range(len(batch.images)) if max(batch.prompts[b]) < T - 1)
    keep = max(batch.prompts[b]) + 1
    o = 1 if b == 0 else 0  # another clip, kept whole
    short = ClipBatch(
        [batch.images[o], batch.images[b][:keep]],
        [batch.masks[o], batch.masks[b][:keep]],
        [batch.prompts[o], batch.prompts[b]],
        [batch.obj_ids[o], batch.obj_ids[b]],
        ["long", "short"],
    )
    assert short.images[1].shape[0] < short.images[0].shape[0]
    loss_b, grads_b = _loss_and_grads(task, model, short)
    task.batch_clips = False
    loss_s, grads_s = _loss_and_grads(task, model, short)
    assert loss_b == pytest.approx(loss_s, rel=1e-5)
    _assert_grads_close(grads_b, grads_s, rel=1e-4, floor=1e-6)


def test_step_without_objects_reaches_every_trainable_parameter(data_root, tmp_path):
    """Clips without any object give a zero loss that still reaches every trainable parameter: backward
    works (it used to raise: the loss had no graph) and DDP with find_unused_parameters=false gets the
    gradient it waits for from each parameter."""
    import dataclasses

    task, batch, model = _clip_batch_and_task(data_root, tmp_path, [])
    empty = dataclasses.replace(batch, obj_ids=[[] for _ in batch.obj_ids])
    parts = task.training_step(model, empty)
    assert float(parts["loss"].detach()) == 0.0
    parts["loss"].backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(trainable) > 100 and all(p.grad is not None and not p.grad.any() for p in trainable)
