"""The exact mode: objects propagated one after another, bit for bit as Meta's ``SAM2VideoPredictor``.

:func:`propagate_one_by_one` runs :func:`~func_3d.propagate.propagate` once per object, with every
frame encoded on its own and every object starting from the earliest prompted frame of all: the same
floating-point operations in the same order as the predictor. Used by ``func_3d.exact_parity=true``
(``segment_volume(exact=True)``); slower than the batched engine, which agrees to ~1e-4 in logits.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from func_3d.outputs import PropagationOutput
from func_3d.prompts import FramePrompts
from func_3d.propagate import propagate


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
