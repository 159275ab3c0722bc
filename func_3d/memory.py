"""Each object's memory bank in a propagation: what it stores, what it attends to, what can be dropped.

An object's bank holds one :class:`Memory` per visited frame: conditioning frames (its prompted slices)
and non-conditioning frames (the slices it was tracked on). On a frame ``t``,
:func:`select_memories` picks, as ``SAM2Base._prepare_memory_conditioned_features`` does, the closest
conditioning frames, up to ``num_maskmem - 1`` previous frames (every ``stride``-th in eval) and the
object pointers of up to ``max_obj_ptrs_in_encoder`` frames (bounded by the volume length);
:func:`memory_tokens` turns the selections of a group of objects with the same layout into one batch of
memory tokens for ``memory_attention``; :func:`prune_bank` drops what no later frame can attend to.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from sam2.modeling.sam2_utils import get_1d_sine_pe, select_closest_cond_frames
from torch import Tensor

# ``[(t_pos, memory)]`` spatial memories and ``[(ptr_pos, memory)]`` object pointers of one object
Selection = tuple[list[tuple[int, "Memory"]], list[tuple[int, "Memory"]]]


@dataclass
class Memory:
    """One object's memory from one frame: ``maskmem [1, Cm, h, w]``, ``obj_ptr [1, C]``."""

    maskmem: Tensor
    obj_ptr: Tensor


@dataclass
class MemoryBank:
    """One object's memories by frame: ``cond`` (prompted frames) and ``non_cond`` (tracked frames)."""

    cond: dict[int, Memory] = field(default_factory=dict)
    non_cond: dict[int, Memory] = field(default_factory=dict)


def select_memories(
    model: torch.nn.Module, bank: MemoryBank, t: int, *, reverse: bool, train: bool, num_frames: int
) -> Selection:
    """Memories an object attends to on frame ``t``: ``[(t_pos, memory)]`` and ``[(ptr_pos, memory)]``.

    Args:
        model: the ``SAM2Base`` (its memory settings: ``num_maskmem``, strides, pointer options).
        bank: the object's memories.
        t: the frame being tracked.
        reverse: the pass runs towards frame 0 (previous frames lie above ``t``).
        train: ``SAM2Train`` semantics (stride 1, all conditioning-frame pointers) instead of the
            predictor's eval semantics.
        num_frames: T, the bound on the object-pointer window.
    """
    selected, unselected = select_closest_cond_frames(t, bank.cond, model.max_cond_frames_in_attn)
    spatial = [(0, m) for m in selected.values()]
    stride = 1 if train else model.memory_temporal_stride_for_eval
    n = model.num_maskmem
    for t_pos in range(1, n):
        back = n - t_pos  # how many frames behind the current one
        if back == 1:
            prev = t + 1 if reverse else t - 1
        elif reverse:
            prev = -(-(t + 2) // stride) * stride + (back - 2) * stride
        else:
            prev = ((t - 2) // stride) * stride - (back - 2) * stride
        mem = bank.non_cond.get(prev, unselected.get(prev))
        if mem is not None:
            spatial.append((t_pos, mem))

    ptrs: list[tuple[int, Memory]] = []
    if model.use_obj_ptrs_in_encoder:
        max_ptrs = min(num_frames, model.max_obj_ptrs_in_encoder)
        cond_for_ptrs = selected
        if not train and model.only_obj_ptrs_in_the_past_for_eval:
            cond_for_ptrs = {tc: m for tc, m in selected.items() if (tc >= t if reverse else tc <= t)}
        sign = -1 if reverse else 1
        for tc, m in cond_for_ptrs.items():
            ptrs.append(((t - tc) * sign if model.use_signed_tpos_enc_to_obj_ptrs else abs(t - tc), m))
        for dt in range(1, max_ptrs):
            prev = t + dt if reverse else t - dt
            if prev < 0 or prev >= num_frames:
                break
            mem = bank.non_cond.get(prev, unselected.get(prev))
            if mem is not None:
                ptrs.append((dt, mem))
    return spatial, ptrs


def memory_tokens(
    model: torch.nn.Module,
    selections: list[Selection],
    mem_pos: Tensor,
    *,
    num_frames: int,
    device: torch.device,
) -> tuple[Tensor, Tensor, int]:
    """Memory tokens of B objects whose selections have the same layout, for ``memory_attention``.

    Args:
        model: the ``SAM2Base``.
        selections: per object its :func:`select_memories` result (same lengths for all B).
        mem_pos: ``[1, Cm, h, w]`` the memory encoder's position encoding.
        num_frames: T, the bound on the object-pointer window.
        device: where the tokens are built.

    Returns:
        Tokens ``[L, B, Cm]``, their position encodings ``[L, B, Cm]`` and the number of object-pointer
        tokens at the end of L.
    """
    C, Cm = model.hidden_dim, model.mem_dim
    split = C // Cm if Cm < C else 1
    max_ptrs = min(num_frames, model.max_obj_ptrs_in_encoder)
    mem_pos = mem_pos.to(device).flatten(2).permute(2, 0, 1)  # [hw, 1, Cm]
    memories, positions = [], []
    n_ptr_tokens = 0
    for spatial, ptrs in selections:
        toks, pos = [], []
        for t_pos, m in spatial:
            dtype = torch.promote_types(m.maskmem.dtype, m.obj_ptr.dtype)
            toks.append(m.maskmem.to(device, dtype, non_blocking=True).flatten(2).permute(2, 0, 1))
            pos.append(mem_pos + model.maskmem_tpos_enc[model.num_maskmem - t_pos - 1])
        if ptrs:
            obj_ptrs = torch.stack([m.obj_ptr.to(device) for _, m in ptrs])  # [n, 1, C]
            n = obj_ptrs.shape[0]
            if model.add_tpos_enc_to_obj_ptrs:
                rel = torch.tensor([p for p, _ in ptrs], device=device) / max(max_ptrs - 1, 1)
                obj_pos = get_1d_sine_pe(rel, dim=C if model.proj_tpos_enc_in_obj_ptrs else Cm)
                obj_pos = model.obj_ptr_tpos_proj(obj_pos).unsqueeze(1)
            else:
                obj_pos = obj_ptrs.new_zeros(n, 1, Cm)
            if split > 1:
                obj_ptrs = obj_ptrs.reshape(n, 1, split, Cm).permute(0, 2, 1, 3).flatten(0, 1)
                obj_pos = obj_pos.repeat_interleave(split, dim=0)
            toks.append(obj_ptrs)
            pos.append(obj_pos)
            n_ptr_tokens = obj_ptrs.shape[0]
        memories.append(torch.cat(toks))
        positions.append(torch.cat(pos))
    return torch.cat(memories, dim=1), torch.cat(positions, dim=1), n_ptr_tokens


def prune_bank(model: torch.nn.Module, bank: MemoryBank, t: int, start: int) -> None:
    """Eval: drop the non-conditioning memories that no frame still to come can attend to.

    A frame attends to at most ``num_maskmem * stride + 2`` frames back (spatial memories) and
    ``max_obj_ptrs_in_encoder`` frames back (pointers); a reverse pass after a forward pass starts
    from the frames just beyond ``start``. Keeps memory flat in the volume length.
    """
    m = model
    window = max(m.num_maskmem * max(m.memory_temporal_stride_for_eval, 1) + 2, m.max_obj_ptrs_in_encoder)
    for f in [f for f in bank.non_cond if abs(f - t) > window and abs(f - start) > window]:
        del bank.non_cond[f]
