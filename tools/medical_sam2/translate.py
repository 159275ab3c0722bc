"""Translation of one Medical-SAM2 command into this suite's command(s), from the flag table.

:func:`translate` finds the script in the command (``train_2d.py``, ``train_3d.py``,
``inference_3d.py``, ``train_both_models.sh``), splits its flags, writes out the flags the script
would take from its defaults, and applies :data:`~tools.medical_sam2.flags.FLAGS`; Medical SAM2-N's
``train_both_models.sh`` becomes one multirun over Hiera-T and Hiera-S (or two commands when the two
models get different batch sizes or GPUs).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tools.medical_sam2.flags import DEFAULTS, FIXED, FLAGS, TRAIN, State, model_from_ckpt, split_flags

SCRIPTS = ("train_2d.py", "train_3d.py", "inference_3d.py", "train_both_models.sh")
GROUPS = {"model", "dataset", "prompt", "trainer"}  # overrides that choose a config file


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
        guess = model_from_ckpt(ckpt) if ckpt else None
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
