"""SAM2 on volumes: slices as video frames, prompts propagated through the volume (all objects batched)."""

from __future__ import annotations

import sam2_train  # noqa: F401  (imports sam2 and clears the Hydra state it sets)
from func_3d.features import FrameFeatures, encode_frames
from func_3d.outputs import PropagationOutput
from func_3d.prompts import FramePrompts, ObjectPrompt, resolve_frame_prompts
from func_3d.propagate import processing_order, propagate, propagate_clips

__all__ = [
    "FrameFeatures",
    "FramePrompts",
    "ObjectPrompt",
    "PropagationOutput",
    "encode_frames",
    "processing_order",
    "propagate",
    "propagate_clips",
    "resolve_frame_prompts",
]
