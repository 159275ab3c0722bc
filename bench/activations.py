"""Activation memory of a training forward, counted from what autograd keeps for the backward pass.

Used by bench/run.py (real CPU steps) and bench/memory_presets.py (the meta device: shapes only).
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint as _torch_checkpoint


class _FlashLikeAttention(torch.autograd.Function):
    """Scaled dot-product attention that keeps what a fused (flash / memory-efficient) GPU kernel keeps for
    its backward pass: q, k, v, the output and one log-sum-exp per query, never the attention matrix."""

    @staticmethod
    def forward(ctx, q, k, v, kwargs):
        with torch.no_grad():
            out = _SDPA(q, k, v, **kwargs)
        lse = q.new_empty(q.shape[:-1])
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):  # pragma: no cover - shapes only, never run
        raise NotImplementedError


_SDPA = torch.nn.functional.scaled_dot_product_attention


def _flash_like_sdpa(q, k, v, **kwargs):
    return _FlashLikeAttention.apply(q, k, v, kwargs)


def saved_bytes(fn, model, *, flash_like: bool = True) -> int:
    """Bytes of the distinct storages autograd keeps for backward (views of one storage counted once,
    parameters excluded), with attention accounted as a fused GPU kernel keeps it."""
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(x):
        st = x.untyped_storage()
        if st._cdata not in params:
            seen[st._cdata] = max(seen.get(st._cdata, 0), st.nbytes())
        return x

    def keep_inputs(orig):
        # a checkpointed region keeps its inputs (not through saved-tensor hooks): count them too
        def wrapped(fn_, *args, **kwargs):
            for x in args:
                if isinstance(x, torch.Tensor):
                    pack(x)
            return orig(fn_, *args, **kwargs)

        return wrapped

    holders = checkpoint_callers()
    saved_sdpa = torch.nn.functional.scaled_dot_product_attention
    if flash_like:
        torch.nn.functional.scaled_dot_product_attention = _flash_like_sdpa
    for mod in holders:
        mod.checkpoint = keep_inputs(_torch_checkpoint)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            fn()
    finally:
        torch.nn.functional.scaled_dot_product_attention = saved_sdpa
        for mod in holders:
            mod.checkpoint = _torch_checkpoint
    return sum(seen.values())


def checkpoint_callers() -> list:
    """The modules of the 3D propagation and of the image encoder's checkpointing that call
    ``torch.utils.checkpoint.checkpoint`` by that name (found, not listed: they move between files)."""
    import sys

    import func_3d.propagate  # noqa: F401
    import sam2_train.activation  # noqa: F401

    holders = [
        mod
        for name, mod in list(sys.modules.items())
        if name.split(".")[0] in ("func_3d", "sam2_train")
        and getattr(mod, "checkpoint", None) is _torch_checkpoint
    ]
    names = {mod.__name__.split(".")[0] for mod in holders}
    if names != {"func_3d", "sam2_train"}:
        raise RuntimeError(
            "bench/activations.py: no module of "
            + " or ".join(sorted({"func_3d", "sam2_train"} - names))
            + " imports torch.utils.checkpoint.checkpoint; update checkpoint_callers()"
        )
    return holders
