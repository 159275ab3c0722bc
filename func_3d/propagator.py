"""The state of one batched propagation and its steps: conditioning frames, then tracked frames.

:class:`Propagator` holds the frame features shared by all objects, one memory bank per object
(:mod:`func_3d.memory`) and the per-frame results (:mod:`func_3d.outputs`). A step takes a list of
``(object, frame)`` entries, groups the objects whose prompts (conditioning frames) or memory layouts
(tracked frames) have the same form, and runs each group in one batch through ``SAM2Base``'s memory
attention, SAM heads and memory encoder, optionally under activation checkpointing. The order of the
steps (which frames, which direction) is chosen by :func:`func_3d.propagate.propagate_clips`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from func_3d.features import FrameFeatures
from func_3d.memory import Memory, MemoryBank, memory_tokens, prune_bank, select_memories
from func_3d.outputs import FrameResult, PropagationOutput, gather_output
from func_3d.prompts import ObjectPrompt


class Propagator:
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
        self.banks = [MemoryBank() for _ in range(self.num_objects)]
        self.results: list[dict[int, FrameResult]] = [{} for _ in range(self.num_objects)]
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
            spatial, ptrs = select_memories(
                self.model, self.banks[o], t, reverse=reverse, train=self.train, num_frames=self.num_frames
            )
            groups.setdefault((len(spatial), len(ptrs)), []).append((o, t, spatial, ptrs))
        for members in groups.values():
            group = [(m[0], m[1]) for m in members]
            B = len(group)
            if self.model.num_maskmem == 0:
                memory = memory_pos = None
                n_ptr = 0
            else:
                memory, memory_pos, n_ptr = memory_tokens(
                    self.model,
                    [(m[2], m[3]) for m in members],
                    self.mem_pos,
                    num_frames=self.num_frames,
                    device=self.device,
                )
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
            memory = Memory(maskmem=maskmem[i : i + 1], obj_ptr=obj_ptr[i : i + 1])
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
        self.results[o][t] = FrameResult(multimasks=multimasks, ious=ious, low_res=low_res, score=score)

    def prune(self, o: int, t: int, start: int) -> None:
        """Eval: drop object ``o``'s memories that no frame still to come can attend to
        (:func:`~func_3d.memory.prune_bank`)."""
        prune_bank(self.model, self.banks[o], t, start)

    def output(
        self, objects: list[int], *, return_logits: bool, return_multimask: bool, output_device: torch.device
    ) -> PropagationOutput:
        """The :class:`PropagationOutput` of the given objects (one clip's), in their order."""
        return gather_output(
            [self.results[o] for o in objects],
            [self.banks[o].cond for o in objects],
            num_frames=self.num_frames,
            image_size=self.model.image_size,
            return_logits=return_logits,
            return_multimask=return_multimask,
            output_device=output_device,
        )
