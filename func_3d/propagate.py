"""Propagate prompts through a volume with ``SAM2Base``, all objects batched, with or without gradients.

Meta's ``SAM2VideoPredictor`` runs under ``torch.inference_mode`` and tracks one object at a time.
This engine drives the same ``SAM2Base`` building blocks (``forward_image``, ``memory_attention``,
``_forward_sam_heads``, ``_use_mask_as_output``, ``_encode_new_memory``) itself:

* every slice is encoded once and its features are shared by the O objects;
* each object keeps its own memory bank (conditioning frames = its prompted slices, non-conditioning
  frames = the slices it was tracked on); objects whose memories have the same layout on a slice
  (same number of memory frames and object pointers) go through the memory attention and the SAM
  heads in one batch. SAM2 objects are independent, so this equals tracking them one by one;
* in eval (``train=False``) it reproduces ``SAM2VideoPredictor.propagate_in_video`` (built with
  ``apply_postprocessing=False``): prompted slices are initial conditioning frames computed before
  tracking, stored memories are cast to bfloat16, object pointers are bounded by the volume length
  and only past ones are attended, and in ``both_directions`` mode the reverse pass shares the memory
  of the forward pass;
* in train mode (``train=True``) it follows ``SAM2Train``: the same loop with gradients, memories kept
  in the compute dtype, memory stride 1, all conditioning-frame pointers, and the multimask outputs
  needed by SAM2's loss.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from sam2.modeling.sam2_base import NO_OBJ_SCORE
from sam2.modeling.sam2_utils import get_1d_sine_pe, select_closest_cond_frames
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from func_3d.features import FrameFeatures, encode_frames
from func_3d.prompts import FramePrompts, ObjectPrompt, resolve_frame_prompts

NUM_MULTIMASK = 3  # SAM2's mask decoder gives 3 candidates when multimask output is on


@dataclass
class PropagationOutput:
    """Per-frame, per-object predictions of one propagation.

    Entries never predicted (frames not visited, e.g. before the start in a forward-only run) hold
    ``NO_OBJ_SCORE`` (-1024) logits, zero IoUs and ``valid == False``. ``s = S // 4``, M = 3.

    Attributes:
        logits: ``[T, O, S, S]`` final mask logits at the model's input size (the low-resolution
            logits upsampled bilinearly, as the predictor returns them); None if not requested.
        low_res_logits: ``[T, O, s, s]`` the selected mask logits of the SAM decoder.
        object_score_logits: ``[T, O, 1]`` object presence logits.
        multimask_logits: ``[T, O, M, s, s]`` all decoder candidates (for SAM2's loss, which takes the
            best of them); where the decoder gave one mask (box or several clicks) it is repeated M
            times, which leaves min-over-candidates and mean-over-candidates losses unchanged. None
            unless requested.
        ious: ``[T, O, M]`` predicted IoUs of the candidates (repeated like ``multimask_logits``).
        num_masks: ``[T, O]`` long, how many candidates the decoder really gave (1 or 3; 0 = none).
        valid: ``[T, O]`` bool, which entries hold a prediction.
        cond: ``[T, O]`` bool, which entries are conditioning (prompted) frames of their object.
    """

    logits: Tensor | None
    low_res_logits: Tensor
    object_score_logits: Tensor
    multimask_logits: Tensor | None
    ious: Tensor
    num_masks: Tensor
    valid: Tensor
    cond: Tensor


@dataclass
class _Memory:
    """One object's memory from one frame: ``maskmem [1, Cm, h, w]``, ``obj_ptr [1, C]``."""

    maskmem: Tensor
    obj_ptr: Tensor


@dataclass
class _Bank:
    cond: dict[int, _Memory] = field(default_factory=dict)
    non_cond: dict[int, _Memory] = field(default_factory=dict)


@dataclass
class _Result:
    """One object on one frame: ``multimasks [1, M, s, s]``, ``ious [1, M]``, ``low_res [1, 1, s, s]``,
    ``score [1, 1]``."""

    multimasks: Tensor
    ious: Tensor
    low_res: Tensor
    score: Tensor


class _Propagator:
    """The state of one propagation: shared frame features, one memory bank per object, results.

    Several clips (videos of the same length T) can run together: object ``o`` belongs to clip
    ``obj_video[o]`` and reads the features of frame ``obj_video[o] * T + t``. Objects never see each
    other's memories, so this equals running the clips one after another.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        feats: FrameFeatures,
        obj_video: list[int],
        num_frames: int,
        *,
        train: bool,
        offload: bool,
        activation_checkpointing: bool,
        keep_multimask: bool,
    ) -> None:
        self.model = model
        self.feats = feats
        self.num_frames = num_frames
        self.obj_video = list(obj_video)
        self.num_objects = len(self.obj_video)
        self.train = train
        self.checkpointing = activation_checkpointing and train
        self.keep_multimask = keep_multimask
        self.device = model.device
        self.storage = torch.device("cpu") if offload else self.device
        self.banks = [_Bank() for _ in range(self.num_objects)]
        self.results: list[dict[int, _Result]] = [{} for _ in range(self.num_objects)]
        self.mem_pos: Tensor | None = None  # [1, Cm, h, w]: the memory encoder's position encoding

    # ---------------------------------------------------------------- helpers
    def _run(self, fn, *args):
        if self.checkpointing and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def _frames(self, entries: list[tuple[int, int]]) -> list[int]:
        return [self.obj_video[o] * self.num_frames + t for o, t in entries]

    def _top(self, entries: list[tuple[int, int]]) -> tuple[Tensor, Tensor]:
        """Lowest-level features ``[HW, B, C]`` and position encoding ``[HW, B, C]`` of the frames that
        the ``(object, frame)`` entries read (a view of one frame's features when they all share it)."""
        frames = self._frames(entries)
        B = len(frames)
        if len(set(frames)) == 1:
            top, pos = self.feats.top(frames[0], self.device)
            return top.expand(-1, B, -1), pos.expand(-1, B, -1)
        top, pos = self.feats.top_many(frames, self.device)
        return top, pos.expand(-1, B, -1)

    def _high_res_maps(self, entries: list[tuple[int, int]]) -> list[Tensor] | None:
        if self.model.num_feature_levels == 1:
            return None
        frames = self._frames(entries)
        if len(set(frames)) == 1:
            maps = self.feats.maps(frames[0], self.device)[:-1]
            return [m.expand(len(frames), -1, -1, -1) for m in maps]
        return self.feats.maps_many(frames, self.device)[:-1]

    # ---------------------------------------------------------------- conditioning frames
    def cond_frames(self, prompts: dict[tuple[int, int], ObjectPrompt], *, across_frames: bool) -> None:
        """Initial conditioning frames ``{(object, frame): prompt}``: no memory, SAM heads on the prompts,
        then memory encoding. Objects whose prompts have the same form share one batch; with
        ``across_frames`` the batch spans frames (and clips), otherwise one frame at a time (the
        predictor's grouping, kept in eval for bit-exact parity)."""
        model = self.model
        groups: dict[tuple, list[tuple[int, int]]] = {}
        for (o, t), p in sorted(prompts.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            key = p.group_key if across_frames else (t, *p.group_key)
            groups.setdefault(key, []).append((o, t))
        H, W = self.feats.feat_sizes[-1]
        for entries in groups.values():
            B = len(entries)
            top, top_pos = self._top(entries)
            hr = self._high_res_maps(entries) or []
            first = prompts[entries[0]]
            points = mask = None
            if first.mask is not None:
                mask = torch.cat([prompts[e].mask for e in entries])
            else:
                points = {
                    "point_coords": torch.cat([prompts[e].point_coords for e in entries]),
                    "point_labels": torch.cat([prompts[e].point_labels for e in entries]),
                }
            if mask is not None and model.use_mask_input_as_output_without_sam:
                # the mask is the output; the decoder only makes the object pointer (from raw features)
                pix = top.permute(1, 2, 0).reshape(B, model.hidden_dim, H, W)
                sam = self._run(
                    lambda p, m, *h: model._use_mask_as_output(p, list(h) or None, m), pix, mask, *hr
                )
            else:
                pix = model._prepare_memory_conditioned_features(
                    frame_idx=entries[0][1],
                    is_init_cond_frame=True,
                    current_vision_feats=[top],
                    current_vision_pos_embeds=[top_pos],
                    feat_sizes=self.feats.feat_sizes[-1:],
                    output_dict={"cond_frame_outputs": {}, "non_cond_frame_outputs": {}},
                    num_frames=self.num_frames,
                )
                multimask = model._use_multimask(True, points)
                sam = self._run(
                    lambda p, *h, pts=points, m=mask, mm=multimask: model._forward_sam_heads(
                        p, pts, m, list(h) or None, mm
                    ),
                    pix,
                    *hr,
                )
            for i, (o, t) in enumerate(entries):
                self._store_result(o, t, tuple(x[i : i + 1] for x in sam))
            self._encode(entries, sam, cond=True, from_points=points is not None)

    # ---------------------------------------------------------------- tracking frames
    def track(self, entries: list[tuple[int, int, bool]]) -> None:
        """Non-conditioning frames ``(object, frame, in_reverse)``: memory attention, SAM heads, memory
        encoding; objects whose memories have the same layout share one batch."""
        groups: dict[tuple[int, int], list[tuple[int, int, list, list]]] = {}
        for o, t, reverse in entries:
            spatial, ptrs = self._select(o, t, reverse)
            groups.setdefault((len(spatial), len(ptrs)), []).append((o, t, spatial, ptrs))
        for members in groups.values():
            group = [(m[0], m[1]) for m in members]
            B = len(group)
            if self.model.num_maskmem == 0:
                memory = memory_pos = None
                n_ptr = 0
            else:
                memory, memory_pos, n_ptr = self._assemble(members)
            top, top_pos = self._top(group)
            hr = self._high_res_maps(group)
            sam = self._run(
                lambda *a, n=n_ptr, b=B: self._track_group(*a, batch=b, num_ptr_tokens=n),
                top,
                top_pos,
                memory,
                memory_pos,
                *(hr or []),
            )
            for i, (o, t) in enumerate(group):
                self._store_result(o, t, tuple(x[i : i + 1] for x in sam))
            self._encode(group, sam, cond=False, from_points=False)

    def _track_group(
        self,
        top: Tensor,
        top_pos: Tensor,
        memory: Tensor | None,
        memory_pos: Tensor | None,
        *high_res: Tensor,
        batch: int,
        num_ptr_tokens: int,
    ) -> tuple[Tensor, ...]:
        """Memory attention and SAM heads for ``batch`` objects with the same memory layout."""
        model = self.model
        H, W = self.feats.feat_sizes[-1]
        C, B = model.hidden_dim, batch
        if memory is None:  # num_maskmem == 0: SAM on single images
            pix = top.permute(1, 2, 0).reshape(B, C, H, W)
        else:
            pix = model.memory_attention(
                curr=[top],
                curr_pos=[top_pos],
                memory=memory,
                memory_pos=memory_pos,
                num_obj_ptr_tokens=num_ptr_tokens,
            )
            pix = pix.permute(1, 2, 0).reshape(B, C, H, W)
        multimask = model._use_multimask(False, None)
        return model._forward_sam_heads(pix, None, None, list(high_res) or None, multimask)

    def _select(
        self, o: int, t: int, reverse: bool
    ) -> tuple[list[tuple[int, _Memory]], list[tuple[int, _Memory]]]:
        """Memories object ``o`` attends to on frame ``t``: ``[(t_pos, memory)]`` and ``[(ptr_pos, memory)]``."""
        model, bank = self.model, self.banks[o]
        selected, unselected = select_closest_cond_frames(t, bank.cond, model.max_cond_frames_in_attn)
        spatial = [(0, m) for m in selected.values()]
        stride = 1 if self.train else model.memory_temporal_stride_for_eval
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

        ptrs: list[tuple[int, _Memory]] = []
        if model.use_obj_ptrs_in_encoder:
            max_ptrs = min(self.num_frames, model.max_obj_ptrs_in_encoder)
            cond_for_ptrs = selected
            if not self.train and model.only_obj_ptrs_in_the_past_for_eval:
                cond_for_ptrs = {tc: m for tc, m in selected.items() if (tc >= t if reverse else tc <= t)}
            sign = -1 if reverse else 1
            for tc, m in cond_for_ptrs.items():
                ptrs.append(((t - tc) * sign if model.use_signed_tpos_enc_to_obj_ptrs else abs(t - tc), m))
            for dt in range(1, max_ptrs):
                prev = t + dt if reverse else t - dt
                if prev < 0 or prev >= self.num_frames:
                    break
                mem = bank.non_cond.get(prev, unselected.get(prev))
                if mem is not None:
                    ptrs.append((dt, mem))
        return spatial, ptrs

    def _assemble(self, members: list[tuple[int, int, list, list]]) -> tuple[Tensor, Tensor, int]:
        """Memory tokens ``[L, B, Cm]`` and their position encodings for a group of objects."""
        model = self.model
        C, Cm = model.hidden_dim, model.mem_dim
        split = C // Cm if Cm < C else 1
        max_ptrs = min(self.num_frames, model.max_obj_ptrs_in_encoder)
        mem_pos = self.mem_pos.to(self.device).flatten(2).permute(2, 0, 1)  # [hw, 1, Cm]
        memories, positions = [], []
        n_ptr_tokens = 0
        for _, _, spatial, ptrs in members:
            toks, pos = [], []
            for t_pos, m in spatial:
                dtype = torch.promote_types(m.maskmem.dtype, m.obj_ptr.dtype)
                toks.append(m.maskmem.to(self.device, dtype, non_blocking=True).flatten(2).permute(2, 0, 1))
                pos.append(mem_pos + model.maskmem_tpos_enc[model.num_maskmem - t_pos - 1])
            if ptrs:
                obj_ptrs = torch.stack([m.obj_ptr.to(self.device) for _, m in ptrs])  # [n, 1, C]
                n = obj_ptrs.shape[0]
                if model.add_tpos_enc_to_obj_ptrs:
                    rel = torch.tensor([p for p, _ in ptrs], device=self.device) / max(max_ptrs - 1, 1)
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

    # ---------------------------------------------------------------- memory encoding and results
    def _encode(
        self, entries: list[tuple[int, int]], sam: tuple[Tensor, ...], *, cond: bool, from_points: bool
    ) -> None:
        model = self.model
        _, _, _, low_res, high_res, obj_ptr, scores = sam
        n = len(entries)
        if model.num_maskmem == 0:
            maskmem = torch.zeros(n, 1, 1, 1, device=self.device)
        else:
            if cond and not self.train:
                # the predictor encodes a prompted frame's memory from its stored low-res logits
                # (``propagate_in_video_preflight``), as if from points
                high_res = F.interpolate(
                    low_res, size=(model.image_size,) * 2, mode="bilinear", align_corners=False
                )
                from_points = True
            top, _ = self._top(entries)
            if model.non_overlap_masks_for_mem_enc and not model.training and n > 1:
                # the predictor encodes objects one by one, so its non-overlap rule never applies
                parts = [
                    self._run(
                        self._encode_memory,
                        top[:, i : i + 1],
                        high_res[i : i + 1],
                        scores[i : i + 1],
                        from_points,
                    )
                    for i in range(n)
                ]
                maskmem = torch.cat([p[0] for p in parts])
                pos = parts[0][1]
            else:
                maskmem, pos = self._run(self._encode_memory, top, high_res, scores, from_points)
            if self.mem_pos is None:
                self.mem_pos = pos[:1].detach().to(self.storage)
            if not self.train:
                maskmem = maskmem.to(torch.bfloat16)  # as the predictor stores it
            maskmem = maskmem.to(self.storage, non_blocking=True)
        for i, (o, t) in enumerate(entries):
            memory = _Memory(maskmem=maskmem[i : i + 1], obj_ptr=obj_ptr[i : i + 1])
            if cond:
                self.banks[o].cond[t] = memory
            else:
                self.banks[o].non_cond[t] = memory

    def _encode_memory(
        self, top: Tensor, high_res: Tensor, scores: Tensor, from_points: bool
    ) -> tuple[Tensor, Tensor]:
        maskmem, pos = self.model._encode_new_memory(
            current_vision_feats=[top],
            feat_sizes=self.feats.feat_sizes[-1:],
            pred_masks_high_res=high_res,
            object_score_logits=scores,
            is_mask_from_pts=from_points,
        )
        return maskmem, pos[-1]

    def _store_result(self, o: int, t: int, sam: tuple[Tensor, ...]) -> None:
        multimasks, _, ious, low_res, _, _, score = sam
        if not self.keep_multimask:
            multimasks = torch.empty(1, sam[0].shape[1], 0, 0, device=self.storage)
        if not self.train:
            low_res, ious, score = (x.to(self.storage, non_blocking=True) for x in (low_res, ious, score))
        self.results[o][t] = _Result(multimasks=multimasks, ious=ious, low_res=low_res, score=score)

    def prune(self, o: int, t: int, start: int) -> None:
        """Eval: drop object ``o``'s non-conditioning memories that no frame still to come can attend to.

        A frame attends to at most ``num_maskmem * stride + 2`` frames back (spatial memories) and
        ``max_obj_ptrs_in_encoder`` frames back (pointers); a reverse pass after a forward pass starts
        from the frames just beyond ``start``. Keeps memory flat in the volume length.
        """
        m = self.model
        window = max(m.num_maskmem * max(m.memory_temporal_stride_for_eval, 1) + 2, m.max_obj_ptrs_in_encoder)
        bank = self.banks[o]
        for f in [f for f in bank.non_cond if abs(f - t) > window and abs(f - start) > window]:
            del bank.non_cond[f]

    def output(
        self, objects: list[int], *, return_logits: bool, return_multimask: bool, output_device: torch.device
    ) -> PropagationOutput:
        T, n = self.num_frames, len(objects)
        s = self.model.image_size // 4
        ref = next(r for o in objects for r in self.results[o].values())
        kw = {"device": ref.low_res.device}
        miss_mask = torch.full((1, 1, s, s), NO_OBJ_SCORE, dtype=ref.low_res.dtype, **kw)
        miss_multi = miss_mask.expand(1, NUM_MULTIMASK, s, s)
        miss_iou = torch.zeros(1, NUM_MULTIMASK, dtype=ref.ious.dtype, **kw)
        miss_score = torch.full((1, 1), NO_OBJ_SCORE, dtype=ref.score.dtype, **kw)
        low, multi, ious, scores = [], [], [], []
        num_masks = torch.zeros(T, n, dtype=torch.long)
        valid = torch.zeros(T, n, dtype=torch.bool)
        cond = torch.zeros(T, n, dtype=torch.bool)
        for t in range(T):
            for j, o in enumerate(objects):
                r = self.results[o].get(t)
                cond[t, j] = t in self.banks[o].cond
                if r is None:
                    low.append(miss_mask)
                    multi.append(miss_multi)
                    ious.append(miss_iou)
                    scores.append(miss_score)
                    continue
                valid[t, j] = True
                m = r.multimasks.shape[1]
                num_masks[t, j] = m
                low.append(r.low_res)
                scores.append(r.score)
                rep = NUM_MULTIMASK // m if NUM_MULTIMASK % m == 0 else 1
                ious.append(r.ious.repeat(1, rep))
                if return_multimask:
                    multi.append(r.multimasks.repeat(1, rep, 1, 1))
        low_res = torch.cat(low).reshape(T, n, s, s)
        logits = None
        if return_logits:
            size = (self.model.image_size,) * 2
            logits = torch.stack(
                [
                    F.interpolate(low_res[t][:, None], size=size, mode="bilinear", align_corners=False)[
                        :, 0
                    ].to(output_device)
                    for t in range(T)
                ]
            )
        return PropagationOutput(
            logits=logits,
            low_res_logits=low_res.to(output_device),
            object_score_logits=torch.cat(scores).reshape(T, n, 1).to(output_device),
            multimask_logits=torch.cat(multi).reshape(T, n, NUM_MULTIMASK, s, s).to(output_device)
            if return_multimask
            else None,
            ious=torch.cat(ious).reshape(T, n, NUM_MULTIMASK).to(output_device),
            num_masks=num_masks,
            valid=valid,
            cond=cond,
        )


def processing_order(
    num_frames: int, start_frame: int, *, reverse: bool = False, both_directions: bool = False
) -> list[tuple[int, bool]]:
    """Frames visited by a propagation as ``(frame, in_reverse)``, in the predictor's order.

    Forward runs ``start .. T-1``; reverse runs ``start .. 0`` (nothing if ``start == 0``, as in the
    predictor); ``both_directions`` runs forward then reverse (the start frame twice).
    """
    fwd = [(t, False) for t in range(start_frame, num_frames)]
    bwd = [(t, True) for t in range(start_frame, -1, -1)] if start_frame > 0 else []
    if both_directions:
        return fwd + bwd
    return bwd if reverse else fwd


def propagate(
    model: torch.nn.Module,
    frames: Tensor | FrameFeatures,
    prompts: Mapping[int, FramePrompts],
    num_objects: int,
    *,
    start_frame: int | None = None,
    reverse: bool = False,
    both_directions: bool = False,
    train: bool | None = None,
    chunk: int = 8,
    offload: bool = False,
    activation_checkpointing: bool = False,
    return_logits: bool = True,
    return_multimask: bool | None = None,
) -> PropagationOutput:
    """Segment O objects through a volume from their prompts, all objects batched.

    Prompted frames are initial conditioning frames of the objects prompted there (no memory, SAM
    heads on the prompt); every other visited frame is tracked from the object's memory: its
    conditioning frames, up to ``num_maskmem - 1`` previous frames and the object pointers of up to
    ``max_obj_ptrs_in_encoder`` frames (bounded by T). An object not prompted on any frame is an error.

    Args:
        model: a ``SAM2Base`` (e.g. ``build_sam2_model(...)``); put it in ``eval()`` for inference and
            ``train()`` for training (dropout, and SAM2's own train/eval switches, follow it).
        frames: ``[T, 3, S, S]`` normalised frames (``S == model.image_size``), or features from
            :func:`encode_frames` (e.g. computed under ``torch.no_grad()`` for a frozen encoder).
        prompts: ``{frame: FramePrompts}``, frame in ``[0, T)``.
        num_objects: O.
        start_frame: first frame visited (default: the earliest prompted frame).
        reverse: run from ``start_frame`` down to 0 instead of up to T-1.
        both_directions: forward, then reverse, sharing one memory (as calling the predictor's
            ``propagate_in_video`` twice); the start frame keeps the reverse pass's prediction.
        train: train-mode semantics with gradients (default: ``model.training``). In eval no
            gradients are recorded and the predictor's semantics are reproduced.
        chunk: frames per image-encoder call when ``frames`` are images.
        offload: keep frame features, memories and outputs on the CPU (memory flat in T).
        activation_checkpointing: recompute each frame's memory attention, SAM heads and memory
            encoder in the backward pass (train only). The image encoder's blocks are checkpointed by
            :func:`sam2_train.set_activation_checkpointing` on the model.
        return_logits: also return ``[T, O, S, S]`` upsampled logits.
        return_multimask: return all decoder candidates (default: ``train``).

    Returns:
        The predictions, see :class:`PropagationOutput`.

    Raises:
        ValueError: bad shapes, frame indices out of range, or an object without any prompt.
    """
    if isinstance(frames, Tensor) and frames.dim() == 4:
        frames = frames[None]
    return propagate_clips(
        model,
        frames,
        [prompts],
        [num_objects],
        start_frames=None if start_frame is None else [start_frame],
        reverse=reverse,
        both_directions=both_directions,
        train=train,
        chunk=chunk,
        offload=offload,
        activation_checkpointing=activation_checkpointing,
        return_logits=return_logits,
        return_multimask=return_multimask,
    )[0]


def propagate_clips(
    model: torch.nn.Module,
    frames: Tensor | FrameFeatures,
    prompts: Sequence[Mapping[int, FramePrompts]],
    num_objects: Sequence[int],
    *,
    start_frames: Sequence[int] | None = None,
    reverse: bool = False,
    both_directions: bool = False,
    train: bool | None = None,
    chunk: int = 8,
    offload: bool = False,
    activation_checkpointing: bool = False,
    return_logits: bool = True,
    return_multimask: bool | None = None,
) -> list[PropagationOutput]:
    """:func:`propagate` for V clips of T frames at once: one image-encoder pass over all V*T frames,
    and on every step the objects of all clips that have the same memory layout share one batch through
    the memory attention, the SAM heads and the memory encoder. Each clip runs its own order (from its
    own start frame) in lockstep with the others; objects never see another clip's frames or memories,
    so every clip's output equals ``propagate`` on that clip alone.

    Args:
        frames: ``[V, T, 3, S, S]`` images, or :class:`FrameFeatures` of the V*T frames (clip-major).
        prompts: per clip ``{frame: FramePrompts}``.
        num_objects: per clip its O (>= 1).
        start_frames: per clip the first frame visited (default: its earliest prompted frame).
        Other arguments: as :func:`propagate`.

    Returns:
        One :class:`PropagationOutput` per clip.
    """
    train = model.training if train is None else bool(train)
    if return_multimask is None:
        return_multimask = train
    V = len(prompts)
    if len(num_objects) != V or V < 1:
        raise ValueError(f"{V} clips of prompts but num_objects has {len(num_objects)} entries")
    for v, n in enumerate(num_objects):
        if n < 1:
            raise ValueError(f"num_objects={n} must be >= 1 (clip {v})")
    with torch.set_grad_enabled(train and torch.is_grad_enabled()):
        if isinstance(frames, FrameFeatures):
            feats = frames
            if feats.num_frames % V:
                raise ValueError(f"{feats.num_frames} frames of features do not split into {V} clips")
            T = feats.num_frames // V
        else:
            if frames.dim() != 5 or frames.shape[0] != V:
                raise ValueError(f"frames must be [{V}, T, 3, S, S] for {V} clips, got {tuple(frames.shape)}")
            T = frames.shape[1]
            feats = encode_frames(model, frames.flatten(0, 1), chunk=chunk, offload=offload)
        device = model.device
        obj_video: list[int] = []
        cond_prompts: dict[tuple[int, int], ObjectPrompt] = {}
        orders: list[list[tuple[int, bool]]] = []
        starts: list[int] = []
        for v in range(V):
            base, n = len(obj_video), int(num_objects[v])
            obj_video += [v] * n
            prompted: set[int] = set()
            for t in sorted(prompts[v]):
                if not 0 <= t < T:
                    raise ValueError(f"prompt on frame {t} is outside the volume of {T} frames")
                per_obj = resolve_frame_prompts(prompts[v][t], n, model.image_size, device)
                for o, p in per_obj.items():
                    cond_prompts[(base + o, t)] = p
                if per_obj:
                    prompted.add(t)
            seen = {o - base for (o, _t) in cond_prompts if base <= o < base + n}
            missing = sorted(set(range(n)) - seen)
            if missing:
                where = f" in clip {v}" if V > 1 else ""
                raise ValueError(f"objects {missing} have no prompt on any frame (of {n} objects){where}")
            start = min(prompted) if start_frames is None else int(start_frames[v])
            if not 0 <= start < T:
                raise ValueError(f"start_frame={start} is outside the volume of {T} frames")
            starts.append(start)
            orders.append(processing_order(T, start, reverse=reverse, both_directions=both_directions))

        state = _Propagator(
            model,
            feats,
            obj_video,
            T,
            train=train,
            offload=offload,
            activation_checkpointing=activation_checkpointing,
            keep_multimask=return_multimask,
        )
        state.cond_frames(cond_prompts, across_frames=train)
        for k in range(max((len(order) for order in orders), default=0)):
            entries = [
                (o, *orders[v][k])
                for o, v in enumerate(obj_video)
                if k < len(orders[v]) and orders[v][k][0] not in state.banks[o].cond
            ]
            if entries:
                state.track(entries)
            if not train:
                for o, v in enumerate(obj_video):
                    if k < len(orders[v]):
                        state.prune(o, orders[v][k][0], starts[v])
        out_device = torch.device("cpu") if offload else device
        outputs, base = [], 0
        for n in num_objects:
            objects = list(range(base, base + int(n)))
            base += int(n)
            outputs.append(
                state.output(
                    objects,
                    return_logits=return_logits,
                    return_multimask=return_multimask,
                    output_device=out_device,
                )
            )
        return outputs


def propagate_one_by_one(
    model: torch.nn.Module, frames: Tensor, prompts: Mapping[int, FramePrompts], num_objects: int, **kwargs
) -> PropagationOutput:
    """:func:`propagate` object after object, each frame encoded on its own (``chunk=1``), every object
    starting from the earliest prompted frame of all: the order of Meta's predictor, reproduced bit for
    bit (batched matmuls round differently, and eval memories stored in bfloat16 can turn such 1e-6
    differences into one-ulp steps). Slower; for exact comparisons with published predictor results."""
    starts = [t for t, p in prompts.items() if any(p.prompts_object(o) for o in range(num_objects))]
    if not starts:
        raise ValueError(f"objects {list(range(num_objects))} have no prompt on any frame")
    kwargs = {**kwargs, "chunk": 1, "start_frame": kwargs.get("start_frame", min(starts))}
    outs = []
    for o in range(num_objects):
        mine = {t: p.select(o) for t, p in prompts.items() if p.prompts_object(o)}
        if not mine:
            raise ValueError(f"objects [{o}] have no prompt on any frame (of {num_objects} objects)")
        outs.append(propagate(model, frames, mine, 1, **kwargs))

    def cat(name):
        parts = [getattr(x, name) for x in outs]
        return None if parts[0] is None else torch.cat(parts, 1)

    return PropagationOutput(**{f: cat(f) for f in PropagationOutput.__dataclass_fields__})
