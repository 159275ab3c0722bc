"""func_3d propagation engine: train-mode gradients, directions, offloading, checkpointing, outputs, errors."""

from __future__ import annotations

import math

import pytest
import torch

from func_3d import FramePrompts, encode_frames, processing_order, propagate
from sam2_train import build_sam2_model
from tests.func_3d.helpers import drifting_discs

S, T, N_OBJ = 64, 6, 2


def synthetic_volume(num_frames: int, size: int, seed: int = 0) -> torch.Tensor:
    """Two drifting discs on noise, ImageNet-normalised: ``[T, 3, S, S]``."""
    return drifting_discs(num_frames, size, [(0.3, 0.4, 0.15), (0.65, 0.6, 0.2)], drift=0.02, seed=seed)


@pytest.fixture(scope="module")
def model(device):
    """On each device of tests/conftest.py DEVICES (CUDA in the ``gpu`` lane); frames and prompts stay
    on the CPU, as a user passes them."""
    torch.manual_seed(0)
    m = build_sam2_model("sam2.1_hiera_t", image_size=S)
    with torch.no_grad():  # object present, so masks (and their gradients) are not constant
        m.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.add_(3.0)
    return m.to(device)


@pytest.fixture(scope="module")
def volume():
    return synthetic_volume(T, S)


def box_prompts(frame: int = 1) -> dict[int, FramePrompts]:
    disc = torch.zeros(N_OBJ, S, S, dtype=torch.bool)
    disc[1, 30:50, 34:54] = True
    return {
        frame: FramePrompts(boxes=torch.tensor([[8.0, 14.0, 30.0, 38.0], [math.nan] * 4])),
        frame + 2: FramePrompts(masks=disc, mask_valid=torch.tensor([False, True])),
    }


def frozen_encoder(model) -> None:
    model.train()
    for name, p in model.named_parameters():
        p.requires_grad_(not name.startswith("image_encoder"))
        p.grad = None


def loss_of(out) -> torch.Tensor:
    valid = out.valid[..., None, None]
    return (
        (out.multimask_logits.sigmoid() * valid[..., None]).mean()
        + out.ious.mean()
        + out.logits.tanh().mean()
    )


def test_train_step_reaches_memory_modules_not_frozen_encoder(model, volume):
    frozen_encoder(model)
    out = propagate(model, volume, box_prompts(), N_OBJ)
    assert out.logits.requires_grad and out.multimask_logits.shape == (T, N_OBJ, 3, S // 4, S // 4)
    loss_of(out).backward()
    for prefix in ("memory_attention.", "memory_encoder.", "sam_mask_decoder.transformer."):
        params = [(n, p) for n, p in model.named_parameters() if n.startswith(prefix)]
        missing = [n for n, p in params if p.grad is None]
        assert not missing, f"no gradient for {missing[:5]}"
        assert any(p.grad.abs().sum() > 0 for _, p in params), prefix
    assert model.maskmem_tpos_enc.grad is not None and model.maskmem_tpos_enc.grad.abs().sum() > 0
    assert all(p.grad is None for n, p in model.named_parameters() if n.startswith("image_encoder"))
    model.eval()


def test_train_reverse_direction(model, volume):
    frozen_encoder(model)
    out = propagate(model, volume, box_prompts(frame=3), N_OBJ, start_frame=T - 1, reverse=True)
    assert out.valid.all() and torch.isfinite(out.logits).all()
    assert out.cond.nonzero().tolist() == [[3, 0], [5, 1]]
    loss_of(out).backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if n.startswith("memory_attention."))
    model.eval()


def test_outputs_and_directions_in_eval(model, volume):
    model.eval()
    fwd = propagate(model, volume, box_prompts(), N_OBJ)
    assert not fwd.logits.requires_grad and fwd.multimask_logits is None
    assert fwd.logits.shape == (T, N_OBJ, S, S) and fwd.low_res_logits.shape == (T, N_OBJ, S // 4, S // 4)
    assert fwd.valid[1:].all() and not fwd.valid[0].any()  # start = first prompted frame
    assert (fwd.logits[0] == -1024.0).all()
    assert fwd.num_masks[1].tolist() == [1, 3]  # box on object 0: one mask; object 1 tracked: three
    assert fwd.num_masks[3].tolist() == [3, 1]  # object 1's mask prompt is used as the output
    both = propagate(model, volume, box_prompts(), N_OBJ, both_directions=True, return_multimask=True)
    assert both.valid.all() and both.multimask_logits.shape == (T, N_OBJ, 3, S // 4, S // 4)
    assert torch.equal(both.logits[2:], fwd.logits[2:])  # forward part unchanged beyond the start's reach
    assert processing_order(5, 2, both_directions=True) == [
        (2, False),
        (3, False),
        (4, False),
        (2, True),
        (1, True),
        (0, True),
    ]
    assert processing_order(5, 0, reverse=True) == []  # as the predictor: nothing before frame 0


def test_offload_and_precomputed_features_give_identical_logits(model, volume):
    model.eval()
    ref = propagate(model, volume, box_prompts(), N_OBJ, both_directions=True)
    off = propagate(model, volume, box_prompts(), N_OBJ, both_directions=True, offload=True)
    assert off.logits.device.type == "cpu" and torch.equal(ref.logits.cpu(), off.logits)
    with torch.no_grad():
        feats = encode_frames(model, volume, chunk=3, offload=True)
    assert feats.num_frames == T and feats.fpn[-1].shape == (T, 256, S // 16, S // 16)
    pre = propagate(model, feats, box_prompts(), N_OBJ, both_directions=True)
    assert (pre.logits - ref.logits).abs().max() <= 1e-4  # chunk 3 vs 8 in the encoder


def test_activation_checkpointing_gives_equal_gradients(model, volume):
    grads = []
    for ckpt in (False, True):
        frozen_encoder(model)  # train mode: dropout on, so the RNG must be replayed by checkpointing
        torch.manual_seed(123)
        out = propagate(model, volume, box_prompts(), N_OBJ, activation_checkpointing=ckpt)
        loss_of(out).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    model.eval()
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 100
    for n, g in grads[0].items():
        scale = g.abs().max().item()
        assert (g - grads[1][n]).abs().max().item() <= 1e-5 * scale + 1e-12, n  # 1e-5 relative


def test_batched_objects_equal_single_objects_in_train_mode(model, volume):
    """No dropout (eval modules) but train semantics and gradients: objects stay independent."""
    model.eval()
    prompts = box_prompts()
    both = propagate(model, volume, prompts, N_OBJ, train=True)
    single = propagate(model, volume, {1: FramePrompts(boxes=prompts[1].boxes[:1])}, 1, train=True)
    assert (both.logits[:, 0] - single.logits[:, 0]).abs().max() <= 1e-4


def test_bad_inputs_raise_clear_errors(model, volume):
    model.eval()
    with pytest.raises(ValueError, match=r"objects \[1\] have no prompt"):
        propagate(
            model, volume, {1: FramePrompts(boxes=torch.tensor([[1.0, 2, 3, 4], [math.nan] * 4]))}, N_OBJ
        )
    with pytest.raises(ValueError, match="outside the volume"):
        propagate(model, volume, {T: FramePrompts(boxes=torch.ones(N_OBJ, 4))}, N_OBJ)
    with pytest.raises(ValueError, match="model.image_size"):
        propagate(model, volume[:, :, :32, :32], {0: FramePrompts(boxes=torch.ones(N_OBJ, 4))}, N_OBJ)
    with pytest.raises(ValueError, match="boxes must be"):
        propagate(model, volume, {0: FramePrompts(boxes=torch.ones(N_OBJ + 1, 4))}, N_OBJ)
    both_kinds = FramePrompts(boxes=torch.ones(N_OBJ, 4), masks=torch.zeros(N_OBJ, S, S, dtype=torch.bool))
    with pytest.raises(ValueError, match="both a mask prompt and a box"):
        propagate(model, volume, {0: both_kinds}, N_OBJ)


def test_eval_memory_pruning_is_exact(model, monkeypatch):
    """Past memories beyond the attention window are dropped in eval; logits must not change."""
    model.eval()
    long = synthetic_volume(48, S, seed=1)
    prompts = {8: FramePrompts(boxes=torch.tensor([[8.0, 14.0, 30.0, 38.0], [30.0, 28.0, 58.0, 52.0]]))}
    pruned = propagate(model, long, prompts, N_OBJ, both_directions=True)
    from func_3d.propagator import Propagator

    monkeypatch.setattr(Propagator, "prune", lambda self, o, t, start: None)
    kept = propagate(model, long, prompts, N_OBJ, both_directions=True)
    assert pruned.valid.all() and torch.equal(pruned.logits, kept.logits)


def _clip_prompts():
    """Two clips: clip A has 2 objects prompted on frames 1 and 3 (start 1); clip B has 1 object
    prompted by a box on its first frame (start 0, so no reverse pass): different orders and layouts."""
    a = box_prompts(frame=1)
    b = {0: FramePrompts(boxes=torch.tensor([[30.0, 28.0, 58.0, 52.0]]))}
    return a, b


@pytest.mark.parametrize("train", [False, True])
def test_batched_clips_equal_clips_one_by_one(model, volume, train):
    """propagate_clips on 2 clips == propagate on each clip alone (masks, scores, IoUs, validity)."""
    from func_3d import propagate_clips

    model.eval()  # no dropout; ``train`` picks SAM2Train vs predictor semantics
    other = synthetic_volume(T, S, seed=5).flip(-1)
    a, b = _clip_prompts()
    kw = {"both_directions": True, "train": train, "return_multimask": True}
    with torch.no_grad():
        batched = propagate_clips(model, torch.stack([volume, other]), [a, b], [N_OBJ, 1], **kw)
        alone = [propagate(model, volume, a, N_OBJ, **kw), propagate(model, other, b, 1, **kw)]
    assert len(batched) == 2
    for got, ref in zip(batched, alone):
        assert torch.equal(got.valid, ref.valid) and torch.equal(got.cond, ref.cond)
        assert got.logits.shape == ref.logits.shape
        assert (got.logits - ref.logits).abs().max() <= 1e-4
        assert (got.multimask_logits - ref.multimask_logits).abs().max() <= 1e-4
        assert (got.ious - ref.ious).abs().max() <= 1e-5
    assert batched[1].valid.all()  # clip B: start 0, forward pass covers every frame


def test_batched_clips_errors_name_the_clip(model, volume):
    from func_3d import propagate_clips

    model.eval()
    a, _ = _clip_prompts()
    half = {0: FramePrompts(boxes=torch.tensor([[8.0, 14.0, 30.0, 38.0], [math.nan] * 4]))}
    with pytest.raises(ValueError, match=r"objects \[1\] have no prompt .* in clip 1"):
        propagate_clips(model, torch.stack([volume, volume]), [a, half], [N_OBJ, 2])
    with pytest.raises(ValueError, match=r"2 clips of prompts but num_objects has 1"):
        propagate_clips(model, torch.stack([volume, volume]), [a, half], [N_OBJ])
    with pytest.raises(ValueError, match=r"frames must be \[2, T, 3, S, S\]"):
        propagate_clips(model, volume, [a, half], [N_OBJ, 2])


# CUDA against the CPU, fp32 with TF32 off: logits within DEVICE_TOL (they are about +-10), masks (logit > 0)
# equal on at least 99.9 % of the pixels. Run in the ``gpu`` lane only (deselected without CUDA).
DEVICE_TOL = 1e-3


@pytest.mark.gpu
def test_cuda_propagation_equals_cpu(monkeypatch):
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    torch.manual_seed(0)
    cpu = build_sam2_model("sam2.1_hiera_t", image_size=S)
    with torch.no_grad():
        cpu.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.add_(3.0)
    cpu.eval()
    cuda = build_sam2_model("sam2.1_hiera_t", image_size=S)
    cuda.load_state_dict(cpu.state_dict())
    cuda = cuda.cuda().eval()
    frames = synthetic_volume(T, S)
    with torch.no_grad():
        ref = propagate(cpu, frames, box_prompts(), N_OBJ, both_directions=True)
        got = propagate(cuda, frames, box_prompts(), N_OBJ, both_directions=True, offload=True)
    assert torch.equal(ref.valid, got.valid)
    diff = (ref.logits - got.logits).abs().max().item()
    agree = ((ref.logits > 0) == (got.logits > 0)).float().mean().item()
    print(f"CUDA vs CPU: max |dlogit| {diff:.2e}, mask agreement {agree:.5f}")
    assert diff <= DEVICE_TOL and agree >= 0.999
