"""Learned class prompts for the automatic (no-prompt) mode with several target classes.

Without a prompt, SAM2's mask decoder receives the same inputs for every object of an image, so two
classes (optic disc and cup, two organs) would get identical masks. :class:`ClassPrompts` gives each
label id one learned sparse token, used *in place of* the sparse prompt (the dense prompt stays SAM2's
"no mask" embedding): classes get different masks, and nothing about the reference decides what is
predicted. The tokens live on the model (``model.class_prompts``), so they are trained, saved in our
checkpoints and restored by the families' weight loaders (:mod:`sam2_train.checkpoint`, :mod:`sam_family.checkpoint`).
"""

from __future__ import annotations

import torch
from torch import nn


class ClassPrompts(nn.Module):
    """One learned sparse prompt token per label id ``0..max_id`` (row 0 unused). tokens: [max_id+1, 1, C]."""

    def __init__(self, max_id: int, dim: int):
        super().__init__()
        if int(max_id) < 1:
            raise ValueError(f"class prompts need at least one class id >= 1, got max id {max_id}")
        self.tokens = nn.Parameter(torch.randn(int(max_id) + 1, 1, int(dim)) * 0.02)

    @property
    def max_id(self) -> int:
        return self.tokens.shape[0] - 1

    def forward(self, obj_class: torch.Tensor) -> torch.Tensor:
        """[N] label ids -> sparse prompt embeddings [N, 1, C]."""
        if obj_class.numel() and int(obj_class.max()) > self.max_id:
            raise ValueError(
                f"class id {int(obj_class.max())} has no learned class prompt (this model has ids 1..{self.max_id})"
            )
        return self.tokens[obj_class.long()]


def attach_class_prompts(model: nn.Module, max_id: int) -> ClassPrompts:
    """Add ``model.class_prompts`` for ids ``1..max_id`` (on the model's device) and return it."""
    dim = int(model.sam_prompt_encoder.embed_dim)
    cp = ClassPrompts(max_id, dim).to(next(model.parameters()).device)
    model.add_module("class_prompts", cp)
    return cp


def attach_saved_class_prompts(model: nn.Module, state_dict: dict) -> ClassPrompts | None:
    """A state dict trained in automatic mode holds ``class_prompts.tokens``: give ``model`` the module
    (sized from the file) before it is loaded; None when there are none or the model has them already."""
    tokens = state_dict.get("class_prompts.tokens")
    if tokens is None or hasattr(model, "class_prompts"):
        return None
    return attach_class_prompts(model, int(tokens.shape[0]) - 1)
