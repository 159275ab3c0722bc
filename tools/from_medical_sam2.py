"""Translate a Medical-SAM2 / Medical SAM2-N command line into this suite's Hydra command.

    python tools/from_medical_sam2.py "python train_2d.py -net sam2 -exp_name X -sam_ckpt ./checkpoints/sam2_hiera_small.pt \
        -sam_config sam2_hiera_s -image_size 1024 -b 4 -val_freq 1 -dataset REFUGE -data_path ./data/REFUGE"
    python tools/from_medical_sam2.py --run -- python train_3d.py -net sam2 -sam_config sam2_hiera_t ...
    python tools/from_medical_sam2.py "bash train_both_models.sh --high-memory"

Understood: ``train_2d.py`` / ``train_3d.py`` (Medical-SAM2's ``cfg.py`` flags), Medical SAM2-N's
``inference_3d.py`` and ``train_both_models.sh``. Every flag is either translated into an override, or
explained in a note (a flag with no effect here), or listed as *unknown*: nothing is dropped silently.
Flags a Medical-SAM2 script would take from its defaults (batch 1, validation every 5 epochs, 100
epochs, ...) are written out so that the run is the same, and the notes say which came from defaults.

``--run`` executes the command (refused while unknown flags remain). Exit status: 0, 1 when flags are
unknown, 2 when the command is not a Medical-SAM2 command. Imports no torch.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("train_2d.py", "train_3d.py", "inference_3d.py", "train_both_models.sh")
TRUE = {"1", "true", "yes", "y", "t", "on"}
PROMPTS = {"bbox": "box", "box": "box", "click": "click"}
DATASETS = {"refuge": ["dataset=refuge", "dataset.target=cup"], "btcv": ["dataset=btcv"]}
CKPT_VARIANT = {"tiny": "t", "small": "s", "base_plus": "b+", "large": "l"}
GROUPS = {"model", "dataset", "prompt", "trainer"}  # overrides that choose a config file
SWITCHES = {"-save_vis", "--high-memory", "--parallel"}  # flags that take no value


class TranslationError(ValueError):
    """The command is not one of the Medical-SAM2 commands this tool knows."""


@dataclass
class Translation:
    """The equivalent of one Medical-SAM2 command: one or more commands of this suite."""

    commands: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)

    def text(self) -> str:
        lines = [shlex.join(c) for c in self.commands]
        lines += [f"# note: {n}" for n in self.notes]
        lines += [f"# unknown flag (not translated): {u}" for u in self.unknown]
        return "\n".join(lines)


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


def _model_from_ckpt(path: str) -> str | None:
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
    return ["train=false", f"model.checkpoint={v}"]


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
FIXED = {
    "train_2d.py": ["trainer.max_epochs=100", "func_2d.memory_bank=true"],
    "train_3d.py": ["trainer.max_epochs=100"],
    "inference_3d.py": ["split=test"],
}


# ------------------------------------------------------------------------------------------ translation
def _translate_python(script: str, flags: list[tuple[str, str | None]], env: dict[str, str]) -> Translation:
    st = State(script=script, env=dict(env))
    tr = Translation()
    overrides: list[str] = []
    given = {f for f, _ in flags if f}
    defaults = [(f, v) for f, v in DEFAULTS[script].items() if f not in given]
    if defaults:
        st.notes.append("from Medical-SAM2's defaults: " + ", ".join(f"{f} {v}" for f, v in defaults))
    if script in TRAIN and "-sam_config" not in given:
        ckpt = dict(flags).get("-sam_ckpt")
        guess = _model_from_ckpt(ckpt) if ckpt else None
        if guess:
            flags = [*flags, ("-sam_config", guess)]
            st.notes.append(f"no -sam_config: model={guess} from the name of -sam_ckpt")
    for flag, value in [*defaults, *flags]:
        if not flag:
            tr.unknown.append(str(value))
            continue
        scripts, rule = FLAGS.get(flag, ((), None))
        if rule is None or script not in scripts:
            tr.unknown.append(f"{flag} {value}" if value is not None else flag)
            continue
        try:
            overrides += rule(value, st)
        except (ValueError, TypeError) as exc:
            tr.unknown.append(f"{flag} {value} ({exc})")
    if script == "train_2d.py":
        st.notes.append(
            "func_2d.memory_bank=true: Medical-SAM2's 2D training always attends to a bank of earlier images"
        )
    if "-pretrain" in given:  # the pretrain file replaces the SAM checkpoint
        keep = [o for o in overrides if o.startswith("model.checkpoint=")][-1:]
        overrides = [o for o in overrides if not o.startswith("model.checkpoint=")] + keep
    if script == "inference_3d.py" and "-checkpoint" in given:
        st.notes.append(
            "a Medical-SAM2 checkpoint is loaded strictly as a Meta-format SAM2 state dict (model= gives the variant)"
        )
    overrides = list(dict.fromkeys(FIXED[script] + overrides))
    overrides.sort(key=lambda o: o.split("=", 1)[0] not in GROUPS)  # config choices first, then values
    env_words = [f"{k}={v}" for k, v in st.env.items()]
    runner = st.prefix or ["python"]
    tr.commands.append([*env_words, *runner, script, *overrides])
    tr.notes = st.notes
    return tr


def _translate_both(flags: list[tuple[str, str | None]]) -> Translation:
    """Medical SAM2-N's ``train_both_models.sh``: Hiera-T then Hiera-S on a 3D dataset, one after the other."""
    opts = {
        "--dataset": "btcv",
        "--data-path": "./data/btcv",
        "--image-size": "1024",
        "--val-freq": "1",
        "--prompt": "bbox",
        "--prompt-freq": "2",
    }
    batch = {"t": "1", "s": "1"}
    device = {"t": "0", "s": "0"}
    high, notes, unknown = False, [], []
    for flag, value in flags:
        if flag in opts and value is not None:
            opts[flag] = value
        elif flag == "--batch-size":
            batch = {"t": value, "s": value}
        elif flag in ("--batch-size-tiny", "--batch-size-small"):
            batch["t" if flag.endswith("tiny") else "s"] = value
        elif flag in ("--gpu-device-tiny", "--gpu-device-small"):
            device["t" if flag.endswith("tiny") else "s"] = value
        elif flag == "--high-memory":
            high = True
        elif flag == "--parallel":
            notes.append(
                "--parallel: the jobs of a multirun run one after another here; "
                "launcher=slurm runs them at the same time"
            )
        else:
            unknown.append(f"{flag} {value}" if value is not None else flag)
    tr = Translation(notes=notes, unknown=unknown)
    explicit_batch = any(f.startswith("--batch-size") for f, _ in flags)
    groups = ["trainer=high_memory"] if high else []
    if high:
        tr.notes.append(
            "--high-memory: trainer=high_memory picks each model's batch for an 80 GB GPU from counted "
            "activation memory (the script's fixed 16 / 12 need not fit at 1024 px); --batch-size overrides it"
        )
    per_model = []
    for size, name in (("t", "Tiny"), ("s", "Small")):
        words = {
            "-net": "sam2",
            "-exp_name": f"{opts['--dataset']}_MedSAM2_{name}",
            "-sam_config": f"sam2_hiera_{size}",
            "-image_size": opts["--image-size"],
            "-val_freq": opts["--val-freq"],
            "-prompt": opts["--prompt"],
            "-prompt_freq": opts["--prompt-freq"],
            "-dataset": opts["--dataset"],
            "-data_path": opts["--data-path"],
            "-b": batch[size],
        }
        one = _translate_python("train_3d.py", list(words.items()), {})
        tr.unknown += one.unknown
        cmd = [
            w
            for w in one.commands[0]
            if explicit_batch or not high or not w.startswith("trainer.batch_size=")
        ]
        if device[size] != "0":
            cmd.append(f"trainer.device=cuda:{device[size]}")
        per_model.append([*cmd[:2], *groups, *cmd[2:], "model.checkpoint=auto"])
    tr.notes.append("kept from train_3d.py's defaults: -lr 1e-4, -video_length 2, 100 epochs")
    tr.notes.append(
        "model.checkpoint=auto: each variant's Meta file under paths.checkpoint_dir "
        "(checkpoints/sam2_hiera_tiny.pt, checkpoints/sam2_hiera_small.pt)"
    )
    if batch["t"] != batch["s"] or device["t"] != device["s"]:
        tr.notes.append("different batch sizes or GPUs per model: two commands instead of one multirun")
        tr.commands += per_model
        return tr
    # one multirun over both variants (the README's "train_both_models" pattern)
    rest = [w for w in per_model[0][2:] if not w.startswith(("model=", "task_name="))]
    sweep = ["-m", "model=sam2_hiera_t,sam2_hiera_s", f"task_name={opts['--dataset']}_MedSAM2"]
    tr.commands.append([*per_model[0][:2], *sweep, *rest])
    return tr


def translate(command: str | Sequence[str]) -> Translation:
    """Translate one Medical-SAM2 command (a string or its words) into this suite's command(s)."""
    words = shlex.split(command) if isinstance(command, str) else list(command)
    if len(words) == 1 and " " in words[0]:
        words = shlex.split(words[0])
    env: dict[str, str] = {}
    for i, w in enumerate(words):
        name = Path(w).name
        if name in SCRIPTS:
            lead, rest = words[:i], words[i + 1 :]
            env = {k: v for k, _, v in (x.partition("=") for x in lead if "=" in x and not x.startswith("-"))}
            flags = split_flags(rest)
            if name == "train_both_models.sh":
                return _translate_both(flags)
            return _translate_python(name, flags, env)
    raise TranslationError(
        f"not a Medical-SAM2 command (expected one of {', '.join(SCRIPTS)}): {shlex.join(words)}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="from_medical_sam2.py", description=__doc__.split("\n")[0])
    p.add_argument("--run", action="store_true", help="execute the translated command(s)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the Medical-SAM2 command (quoted, or after --)")
    args = p.parse_args(argv)
    words = [w for w in args.command if w != "--"] if args.command[:1] == ["--"] else args.command
    if not words:
        p.error('give the Medical-SAM2 command, e.g. "python train_2d.py -net sam2 ..."')
    try:
        tr = translate(words)
    except TranslationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(tr.text())
    if tr.unknown:
        print(f"error: {len(tr.unknown)} unknown flag(s): {'; '.join(tr.unknown)}", file=sys.stderr)
        return 1
    if args.run:
        for cmd in tr.commands:
            env = dict(os.environ)
            while cmd and "=" in cmd[0] and not cmd[0].startswith("-"):
                k, _, v = cmd.pop(0).partition("=")
                env[k] = v
            # the scripts live in this repository; relative data paths stay relative to the caller's folder
            cmd = [str(ROOT / w) if w in SCRIPTS else w for w in cmd]
            if cmd[0] == "python":
                cmd = [sys.executable, *cmd[1:]]
            rc = subprocess.call(cmd, env=env)
            if rc:
                return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
