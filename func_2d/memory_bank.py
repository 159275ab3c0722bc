"""A memory bank across images (Medical-SAM2 style) for 2D SAM2.

Each entry is the SAM2 memory of one segmented object (``_encode_new_memory`` output: spatial
features [64,h,w] + position encoding), the pooled image embedding it came from (for similarity) and
the predicted IoU (quality). A new image's objects attend, through SAM2's memory attention, to the
``k`` entries of the same class whose images are most similar. Entries enter only when their predicted
IoU is at least ``min_iou``; when the bank is full the new entry replaces the entry most similar to it
(keeps the bank diverse). Entries are detached: the bank carries no gradient across steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class MemoryBank:
    def __init__(self, size: int = 16, k: int = 4, min_iou: float = 0.5):
        if size < 1 or k < 1:
            raise ValueError(f"func_2d.bank_size={size} and k={k} must be >= 1")
        self.size, self.k, self.min_iou = int(size), int(k), float(min_iou)
        self.feats: list[torch.Tensor] = []  # [64,h,w]
        self.pos: list[torch.Tensor] = []  # [64,h,w]
        self.keys: list[torch.Tensor] = []  # [C] pooled image embedding, L2-normalised
        self.cls: list[int] = []
        self.quality: list[float] = []

    def __len__(self) -> int:
        return len(self.feats)

    def retrieve(self, key: torch.Tensor, cls: int) -> list[int]:
        """Indices of up to k entries of class ``cls`` most similar to ``key`` [C]."""
        idx = [i for i, c in enumerate(self.cls) if c == cls]
        if not idx:
            return []
        sims = torch.stack([self.keys[i] for i in idx]).to(key.device) @ key
        order = torch.argsort(sims, descending=True)[: self.k].tolist()
        return [idx[j] for j in order]

    def add(self, feat, pos, key, cls: int, quality: float) -> None:
        if quality < self.min_iou:
            return
        feat, pos, key = feat.detach().cpu(), pos.detach().cpu(), key.detach().cpu()
        if len(self) < self.size:
            self.feats.append(feat), self.pos.append(pos), self.keys.append(key)
            self.cls.append(int(cls)), self.quality.append(float(quality))
            return
        sims = torch.stack(self.keys) @ key
        j = int(torch.argmax(sims))
        self.feats[j], self.pos[j], self.keys[j], self.cls[j], self.quality[j] = (
            feat,
            pos,
            key,
            int(cls),
            float(quality),
        )

    def state_dict(self) -> dict:
        return {
            "feats": list(self.feats),
            "pos": list(self.pos),
            "keys": list(self.keys),
            "cls": list(self.cls),
            "quality": list(self.quality),
        }

    def load_state_dict(self, state: dict) -> None:
        self.feats, self.pos, self.keys = list(state["feats"]), list(state["pos"]), list(state["keys"])
        self.cls, self.quality = [int(c) for c in state["cls"]], [float(q) for q in state["quality"]]


def image_keys(image_embed: torch.Tensor) -> torch.Tensor:
    """Pooled, L2-normalised image embeddings [B,C] used as similarity keys."""
    return F.normalize(image_embed.mean(dim=(2, 3)).float(), dim=1)


def condition_on_bank(model, feats, bank: MemoryBank, obj_img: torch.Tensor, obj_class: torch.Tensor):
    """Per-object image embeddings [N,C,h,w] after memory attention to the bank.

    Objects without a retrievable memory get SAM2's no-memory embedding (as the image predictor).
    """
    C = model.hidden_dim
    h, w = feats.feat_sizes[-1]
    curr = feats.vision_feats[-1]  # [HW,B,C] without no_mem_embed
    curr_pos = feats.vision_pos[-1]
    keys = image_keys(feats.image_embed)
    out = []
    for n in range(obj_img.shape[0]):
        b = int(obj_img[n])
        picks = bank.retrieve(keys[b], int(obj_class[n]))
        if not picks:
            out.append(feats.image_embed[b])
            continue
        dev = curr.device
        tpos = model.maskmem_tpos_enc[model.num_maskmem - 1].to(dev)  # [1,1,64]: "a past frame"
        mem = torch.cat([bank.feats[i].to(dev).flatten(1).permute(1, 0) for i in picks], 0)[:, None]
        mem_pos = (
            torch.cat([bank.pos[i].to(dev).flatten(1).permute(1, 0) for i in picks], 0)[:, None] + tpos[0]
        )
        x = model.memory_attention(
            curr=[curr[:, b : b + 1]],
            curr_pos=[curr_pos[:, b : b + 1]],
            memory=mem.to(curr.dtype),
            memory_pos=mem_pos.to(curr.dtype),
            num_obj_ptr_tokens=0,
        )
        out.append(x.permute(1, 2, 0).reshape(C, h, w))
    return torch.stack(out)


def encode_memories(model, feats, obj_img, high_res_masks, object_score_logits):
    """SAM2 memories of N predicted objects: (features [N,64,h,w], pos [N,64,h,w])."""
    vision = [feats.vision_feats[-1][:, obj_img]]
    mem, pos = model._encode_new_memory(
        current_vision_feats=vision,
        feat_sizes=feats.feat_sizes,
        pred_masks_high_res=high_res_masks,
        object_score_logits=object_score_logits,
        is_mask_from_pts=False,
    )
    return mem, pos[-1] if isinstance(pos, list) else pos
