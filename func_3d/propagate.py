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

This module holds the entry points and the order of the frames (:func:`processing_order`,
:func:`propagate`, :func:`propagate_clips`); the batched steps are in :mod:`func_3d.propagator`, the
memory banks in :mod:`func_3d.memory`, the returned type in :mod:`func_3d.outputs`, and the exact
one-object-at-a-time mode (:func:`~func_3d.exact.propagate_one_by_one`) in :mod:`func_3d.exact`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from func_3d.features import FrameFeatures, encode_frames
from func_3d.outputs import PropagationOutput
from func_3d.prompts import FramePrompts, ObjectPrompt, resolve_frame_prompts
from func_3d.propagator import Propagator

__all__ = ["PropagationOutput", "processing_order", "propagate", "propagate_clips"]


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

        state = Propagator(
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
