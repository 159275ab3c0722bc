"""Strict loading of SAM2 weights: Meta's ``{"model": state_dict}`` files and our training checkpoints.

Every failure is one :class:`CheckpointError` whose message names the file and says what is wrong:
missing file, truncated/corrupt file, a pickle that needs code, another variant's weights (with the
variant the file looks like), or missing/unexpected keys (first few listed).
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded; the message is one line naming the file."""


# Signature of each variant: (patch-embed width, number of Hiera blocks, SAM2.1 keys present)
_SIGNATURES = {
    (96, 12, False): "sam2_hiera_t",
    (96, 16, False): "sam2_hiera_s",
    (112, 24, False): "sam2_hiera_b+",
    (144, 48, False): "sam2_hiera_l",
    (96, 12, True): "sam2.1_hiera_t",
    (96, 16, True): "sam2.1_hiera_s",
    (112, 24, True): "sam2.1_hiera_b+",
    (144, 48, True): "sam2.1_hiera_l",
}


def guess_variant(state_dict: dict) -> str | None:
    """Name the SAM2 variant a state dict belongs to, from tensor shapes and key names."""
    w = state_dict.get("image_encoder.trunk.patch_embed.proj.weight")
    if not isinstance(w, torch.Tensor):
        return None
    blocks = {int(k.split(".")[3]) for k in state_dict if k.startswith("image_encoder.trunk.blocks.")}
    is_21 = "no_obj_embed_spatial" in state_dict or "obj_ptr_tpos_proj.weight" in state_dict
    return _SIGNATURES.get((int(w.shape[0]), len(blocks), is_21))


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint file with ``weights_only=True``; one clear error per failure mode."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: checkpoint file is empty (0 bytes)")
    from medseg.train.pickle_guard import UnsafeFileError, sniff_torch_file

    try:
        sniff_torch_file(path)
    except UnsafeFileError as e:  # e.g. a text file: torch's own error would not name it
        raise CheckpointError(str(e)) from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "Unsupported global" in str(e) or "GLOBAL " in str(e):
            raise CheckpointError(
                f"{path}: refused: the file is a pickle that needs code to load (weights_only=True); "
                f"only tensors/containers are accepted ({first[:160]})"
            ) from None
        reason = next(
            (
                ln.strip()
                for ln in str(e).splitlines()
                if "load key" in ln or "truncated" in ln or "Unsupported operand" in ln
            ),
            first,
        )
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({reason[:160]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError, IndexError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({msg[:160]})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{path}: expected a dict with a 'model' state dict, found {type(obj).__name__}"
        )
    return obj


def state_dict_of(obj: dict, path: str | Path) -> dict:
    sd = obj.get("model", obj)
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: no 'model' state dict of tensors in this checkpoint")
    return sd


def load_sam2_weights(model: torch.nn.Module, path: str | Path, *, variant: str | None = None) -> dict:
    """Load SAM2 weights into ``model`` with strict key matching; returns the checkpoint dict.

    Raises:
        CheckpointError: one line naming ``path`` and the problem.
    """
    obj = read_checkpoint(path)
    sd = state_dict_of(obj, path)
    if "class_prompts.tokens" in sd and not hasattr(model, "class_prompts"):  # trained in automatic mode
        from sam2_train.class_prompts import attach_class_prompts

        attach_class_prompts(model, int(sd["class_prompts.tokens"].shape[0]) - 1)
    expected = model.state_dict()
    found = guess_variant(sd)
    if variant is not None and found is not None and found != variant:
        raise CheckpointError(
            f"{path}: checkpoint is for variant {found!r} but model.variant is {variant!r} "
            f"(choose model={found} or the matching checkpoint)"
        )
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (first: {', '.join(missing[:4])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (first: {', '.join(unexpected[:4])})")
        looks = f"; it looks like {found!r}" if found else ""
        raise CheckpointError(
            f"{path}: keys do not match {variant or 'the model'}: {'; '.join(parts)}{looks}"
        )
    bad = [k for k, v in sd.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if bad:
        k = bad[0]
        raise CheckpointError(
            f"{path}: {len(bad)} tensors have the wrong shape, e.g. {k}: file {tuple(sd[k].shape)} vs "
            f"model {tuple(expected[k].shape)}" + (f"; it looks like {found!r}" if found else "")
        )
    model.load_state_dict(sd, strict=True)
    return obj
