"""Medical-SAM2's flags: how its command lines split into flags, and what each flag becomes here.

``FLAGS`` maps each flag of Medical-SAM2's ``cfg.py`` (and Medical SAM2-N's ``inference_3d.py``) to the
scripts it applies to and a rule ``(value, State) -> overrides``; a rule may add a note to the
:class:`State` (a flag with no effect here) or raise ``ValueError`` (reported as an unknown flag).
``DEFAULTS`` holds what those scripts do when a flag is absent, ``FIXED`` what they always do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TRUE = {"1", "true", "yes", "y", "t", "on"}
PROMPTS = {"bbox": "box", "box": "box", "click": "click"}
DATASETS = {"refuge": ["dataset=refuge", "dataset.target=cup"], "btcv": ["dataset=btcv"]}
CKPT_VARIANT = {"tiny": "t", "small": "s", "base_plus": "b+", "large": "l"}
SWITCHES = {"-save_vis", "--high-memory", "--parallel"}  # flags that take no value


# ------------------------------------------------------------------------------------------ parsing
def split_flags(tokens: Sequence[str]) -> list[tuple[str, str | None]]:
    """``-flag value`` / ``-switch`` pairs in order; a value never starts with ``-`` unless it is a number."""
    out: list[tuple[str, str | None]] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("-"):
            out.append(("", tok))  # a stray positional argument: reported as unknown
            i += 1
            continue
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        takes_value = tok not in SWITCHES and nxt is not None and (not nxt.startswith("-") or _is_number(nxt))
        out.append((tok, nxt if takes_value else None))
        i += 2 if takes_value else 1
    return out


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _bool(v: str | None) -> bool:
    return v is None or v.strip().lower() in TRUE


def _model(value: str) -> str:
    if not (ROOT / "conf" / "model" / f"{value}.yaml").is_file():
        raise ValueError(f"model config {value!r} has no conf/model/{value}.yaml here")
    return f"model={value}"


def model_from_ckpt(path: str) -> str | None:
    """``sam2_hiera_small.pt`` -> ``sam2_hiera_s`` (Meta's file names), else None."""
    stem = Path(path).stem
    for long, short in CKPT_VARIANT.items():
        if stem.endswith(f"_hiera_{long}"):
            return stem[: -len(long)] + short
    return None


# ------------------------------------------------------------------------------------------ flag table
# Each entry: flag -> (scripts it applies to, function(value, state) -> overrides). A function may add
# notes to the state or raise ValueError for a value it cannot translate (reported as unknown).
Rule = Callable[[str | None, "State"], list[str]]


@dataclass
class State:
    script: str
    notes: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    prefix: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)


def _note(text: str) -> Rule:
    def rule(v, st: State) -> list[str]:
        st.notes.append(text)
        return []

    return rule


def _set(key: str, conv: Callable[[str], str] = str) -> Rule:
    return lambda v, st: [f"{key}={conv(v)}"]


def _net(v, st: State) -> list[str]:
    if v != "sam2":
        raise ValueError(
            f"-net {v}: only sam2 has an equivalent here (baselines: model=resnet_box_prompt, unet, ...)"
        )
    return []


def _prompt(v, st: State) -> list[str]:
    if v not in PROMPTS:
        raise ValueError(f"-prompt {v}: expected bbox or click")
    return [f"prompt={PROMPTS[v]}"]


def _prompt_freq(v, st: State) -> list[str]:
    if st.script == "train_2d.py":
        st.notes.append("-prompt_freq only concerns 3D volumes; no effect in 2D")
        return []
    return [f"prompt.freq={int(v)}", "func_3d.val_prompt=freq"]


def _dataset(v, st: State) -> list[str]:
    key = v.lower()
    if key in DATASETS:
        return list(DATASETS[key])
    if (ROOT / "conf" / "dataset" / f"{key}.yaml").is_file():
        return [f"dataset={key}"]
    raise ValueError(
        f"-dataset {v}: no conf/dataset/{key}.yaml (use dataset=folder2d or nnunet with dataset.root)"
    )


def _device(v, st: State) -> list[str]:
    return [f"trainer.device=cuda:{int(v)}"]


def _gpu(v, st: State) -> list[str]:
    return [] if _bool(v) else ["trainer.device=cpu"]


def _distributed(v, st: State) -> list[str]:
    if v is None or v.lower() == "none":
        return []
    ids = [x for x in v.split(",") if x.strip()]
    st.env["CUDA_VISIBLE_DEVICES"] = ",".join(ids)
    st.prefix = ["torchrun", f"--nproc_per_node={len(ids)}"]
    st.notes.append(f"-distributed {v}: one torchrun process per GPU (gradients averaged, as DDP)")
    return []


def _pretrain(v, st: State) -> list[str]:
    st.notes.append("-pretrain P: training starts from P (it replaces -sam_ckpt, as in Medical-SAM2)")
    return [f"model.checkpoint={v}"]


def _weights(v, st: State) -> list[str]:
    if v in (None, "0"):
        return []
    st.notes.append(
        f"-weights {v}: training continues from these weights (model.checkpoint; a Medical-SAM2 "
        "{'model': 'sam2', 'state_dict': ...} file loads strictly); epochs count from 0 again"
    )
    return [f"model.checkpoint={v}"]


def _video_length(v, st: State) -> list[str]:
    if st.script == "train_2d.py":
        st.notes.append("-video_length only concerns 3D volumes; no effect in 2D")
        return []
    if st.script == "inference_3d.py":
        st.notes.append("-video_length: inference propagates through whole volumes; no effect")
        return []
    return [f"func_3d.video_length={int(v)}"]


def _memory_bank(v, st: State) -> list[str]:
    if st.script != "train_2d.py":
        st.notes.append("-memory_bank_size only concerns the 2D memory bank; no effect in 3D")
        return []
    return [f"func_2d.bank_size={int(v)}"]


def _vis(v, st: State) -> list[str]:
    return [f"vis={'true' if _bool(v) else 'false'}"]


TRAIN = ("train_2d.py", "train_3d.py")
ALL = (*TRAIN, "inference_3d.py")
FLAGS: dict[str, tuple[tuple[str, ...], Rule]] = {
    "-net": (ALL, _net),
    "-exp_name": (TRAIN, _set("task_name")),
    "-sam_ckpt": (TRAIN, _set("model.checkpoint")),
    "-sam_config": (ALL, lambda v, st: [_model(v)]),
    "-checkpoint": (("inference_3d.py",), _set("checkpoint")),
    "-pretrain": (TRAIN, _pretrain),
    "-weights": (TRAIN, _weights),
    "-image_size": (ALL, _set("model.image_size", lambda v: str(int(v)))),
    "-out_size": (ALL, _note("-out_size: scores and masks are computed on each image's own grid here")),
    "-b": (ALL, _set("trainer.batch_size", lambda v: str(int(v)))),
    "-lr": (TRAIN, _set("optim.lr")),
    "-val_freq": (TRAIN, _set("trainer.val_freq", lambda v: str(int(v)))),
    "-dataset": (ALL, _dataset),
    "-data_path": (ALL, _set("dataset.root")),
    "-prompt": (ALL, _prompt),
    "-prompt_freq": (ALL, _prompt_freq),
    "-video_length": (ALL, _video_length),
    "-memory_bank_size": (TRAIN, _memory_bank),
    "-multimask_output": (
        TRAIN,
        _note(
            "-multimask_output: each object is its own prompt here (func_2d.multimask_output picks SAM's 3 candidates)"
        ),
    ),
    "-vis": (TRAIN, _vis),
    "-train_vis": (TRAIN, _note("-train_vis: pictures are drawn at validation only (vis=true)")),
    "-encoder": (TRAIN, _note("-encoder: not used by SAM2 (the image encoder is Hiera, set by -sam_config)")),
    "-gpu": (ALL, _gpu),
    "-gpu_device": (ALL, _device),
    "-distributed": (TRAIN, _distributed),
    "-output_dir": (("inference_3d.py",), _set("output_dir")),
    "-save_vis": (("inference_3d.py",), lambda v, st: ["save_vis=true"]),
}

# What each flag means in Medical-SAM2, and how closely its override here reproduces that:
# exact (the same behaviour), approximate (the same intent, differences in the note), ignored (no effect
# here; a rule that only adds a note, or a flag that concerns another script, is reported as ignored).
MEANING: dict[str, tuple[str, str]] = {
    "-net": ("network (sam2)", "exact"),
    "-exp_name": ("experiment name (log folder)", "exact"),
    "-sam_ckpt": ("SAM2 weights training starts from", "exact"),
    "-sam_config": ("SAM2 architecture", "exact"),
    "-checkpoint": ("trained weights to run", "exact"),
    "-pretrain": ("weights replacing -sam_ckpt", "exact"),
    "-weights": ("continue training from these weights", "approximate"),
    "-image_size": ("input size", "exact"),
    "-out_size": ("size of the output masks", "approximate"),
    "-b": ("batch size", "exact"),
    "-lr": ("learning rate (3D: of the mask decoder)", "exact"),
    "-val_freq": ("validate every N epochs", "exact"),
    "-dataset": ("dataset layout", "exact"),
    "-data_path": ("dataset folder", "exact"),
    "-prompt": ("prompt type", "exact"),
    "-prompt_freq": ("a prompt every N frames", "exact"),
    "-video_length": ("frames per training clip", "exact"),
    "-memory_bank_size": ("2D memory bank size", "approximate"),
    "-multimask_output": ("candidate masks per prompt", "ignored"),
    "-vis": ("save pictures at validation", "approximate"),
    "-train_vis": ("save pictures while training", "ignored"),
    "-encoder": ("encoder of SAM v1 (unused by SAM2)", "ignored"),
    "-gpu": ("use a GPU", "exact"),
    "-gpu_device": ("GPU index", "exact"),
    "-distributed": ("GPUs (DataParallel)", "approximate"),
    "-output_dir": ("folder of the predictions", "exact"),
    "-save_vis": ("save pictures", "exact"),
}

# Medical-SAM2's training recipe, fixed in its code (no flag): (what, its behaviour, overrides, fidelity).
RECIPE: dict[str, list[tuple[str, str, list[str], str]]] = {
    "train_3d.py": [
        ("optimiser", "Adam, no weight decay; mask decoder at -lr, memory attention/encoder at 1e-8",
         ["optim=medical_sam2_adam"], "exact"),
        ("frozen parts", "image and prompt encoders frozen (only decoder and memory in the optimisers)",
         ["model.trainable=medical_sam2_3d"], "exact"),
        ("loss", "BCEWithLogitsLoss(pos_weight=2)", ["loss=medical_sam2_bce"], "exact"),
        ("schedule", "constant learning rate", ["scheduler=constant"], "exact"),
        ("validation", "on the Test folder", ["++dataset.split.val_from=test"], "exact"),
        ("epochs", "100 (global_settings)", ["trainer.max_epochs=100"], "exact"),
    ],
    "train_2d.py": [
        ("optimiser", "Adam over every parameter, no weight decay, at -lr",
         ["optim=medical_sam2_adam", "optim.param_groups=[]"], "exact"),
        ("frozen parts", "none (full fine-tuning)", ["model.trainable=full"], "exact"),
        ("loss", "BCEWithLogitsLoss(pos_weight=2)", ["loss=medical_sam2_bce"], "exact"),
        ("schedule", "constant learning rate", ["scheduler=constant"], "exact"),
        ("validation", "on the Test folder", ["++dataset.split.val_from=test"], "exact"),
        ("epochs", "100 (global_settings)", ["trainer.max_epochs=100"], "exact"),
        ("memory bank", "earlier images attended to while training",
         ["func_2d.memory_bank=true"], "approximate"),
    ],
    "inference_3d.py": [("split", "the Test folder", ["split=test"], "exact")],
}  # fmt: skip

# What Medical-SAM2's scripts do when a flag is absent (cfg.py defaults, 100 epochs in global_settings).
DEFAULTS: dict[str, dict[str, str]] = {
    "train_2d.py": {
        "-b": "1",
        "-val_freq": "5",
        "-image_size": "1024",
        "-lr": "1e-4",
        "-prompt": "bbox",
        "-dataset": "btcv",
        "-data_path": "./data/btcv",
        "-memory_bank_size": "16",
    },
    "train_3d.py": {
        "-b": "1",
        "-val_freq": "5",
        "-image_size": "1024",
        "-lr": "1e-4",
        "-prompt": "bbox",
        "-prompt_freq": "2",
        "-video_length": "2",
        "-dataset": "btcv",
        "-data_path": "./data/btcv",
    },
    "inference_3d.py": {
        "-sam_config": "sam2_hiera_s",
        "-dataset": "btcv",
        "-prompt": "bbox",
        "-prompt_freq": "2",
        "-output_dir": "./inference_results",
        "-image_size": "1024",
    },
}
FIXED = {script: [o for _, _, overrides, _ in rows for o in overrides] for script, rows in RECIPE.items()}
