"""Translation of one Medical-SAM2 command into this suite's command(s), from the flag table.

:func:`translate` finds the script in the command (``train_2d.py``, ``train_3d.py``,
``inference_3d.py``, ``train_both_models.sh``), splits its flags, writes out the flags the script
would take from its defaults, and applies :data:`~tools.medical_sam2.flags.FLAGS`; Medical SAM2-N's
``train_both_models.sh`` becomes one multirun over Hiera-T and Hiera-S (or two commands when the two
models get different batch sizes or GPUs).
"""

from __future__ import annotations

import glob
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tools.medical_sam2.flags import (
    DEFAULTS,
    FIXED,
    FLAGS,
    MEANING,
    RECIPE,
    TRAIN,
    State,
    model_from_ckpt,
    split_flags,
)

SCRIPTS = ("train_2d.py", "train_3d.py", "inference_3d.py", "train_both_models.sh")
GROUPS = {"model", "dataset", "prompt", "trainer", "loss", "optim", "scheduler"}  # overrides choosing a file
# train_both_models.sh --high-memory: "sets batch size to 16 for Tiny and 12 for Small"
HIGH_MEMORY_BATCH = {"t": "16", "s": "12"}
GLOB = re.compile(r"[*?\[]")


def shell_word(word: str) -> str:
    """``word`` quoted for a POSIX shell; a ``key=value`` whose value is a glob (``-checkpoint
    ./logs/X_*/Model/best.pth`` in Medical-SAM2's README) becomes ``key="$(ls -d GLOB | tail -n 1)"``, so
    the shell still expands it (the last match in sort order: the newest time-stamped log folder)."""
    key, eq, value = word.partition("=")
    if not eq or not GLOB.search(value) or key.startswith("-"):
        return shlex.quote(word)
    parts = re.split(r"([*?]|\[[^]]*\])", value)  # glob tokens stay bare, literal runs are quoted
    pattern = "".join(p if i % 2 else (shlex.quote(p) if p else "") for i, p in enumerate(parts))
    return f'{shlex.quote(key + "=")}"$(ls -d {pattern} | tail -n 1)"'


def expand_globs(cmd: list[str]) -> list[str]:
    """``--run``: the same expansion as :func:`shell_word` (the last match in sort order).

    Raises:
        TranslationError: a glob matches nothing (names it).
    """
    out = []
    for word in cmd:
        key, eq, value = word.partition("=")
        if eq and GLOB.search(value) and not key.startswith("-"):
            found = sorted(glob.glob(value))
            if not found:
                raise TranslationError(f"{key}={value}: no file matches this pattern")
            word = f"{key}={found[-1]}"
        out.append(word)
    return out


class TranslationError(ValueError):
    """The command is not one of the Medical-SAM2 commands this tool knows."""


@dataclass
class Translation:
    """The equivalent of one Medical-SAM2 command: one or more commands of this suite."""

    commands: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    # (flag and value | "(what)", Medical-SAM2's meaning, our overrides, exact | approximate | ignored)
    fidelity: list[tuple[str, str, str, str]] = field(default_factory=list)

    def text(self) -> str:
        lines = [" ".join(shell_word(w) for w in c) for c in self.commands]
        lines += [f"# note: {n}" for n in self.notes]
        lines += [f"# unknown flag (not translated): {u}" for u in self.unknown]
        if self.fidelity:
            lines += ["# fidelity (Medical-SAM2 -> here):", "# | flag | Medical-SAM2 | here | fidelity |"]
            lines += ["# |---|---|---|---|"]
            lines += [f"# | {f} | {m} | {o or '-'} | {lv} |" for f, m, o, lv in self.fidelity]
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
        n_notes = len(st.notes)
        try:
            got = rule(value, st)
        except (ValueError, TypeError) as exc:
            tr.unknown.append(f"{flag} {value} ({exc})")
            continue
        overrides += got
        meaning, level = MEANING.get(flag, (flag, "exact"))
        if not got and len(st.notes) > n_notes and "no effect" in st.notes[-1]:
            level = "ignored"
        shown = f"{flag} {value}" if value is not None else flag
        tr.fidelity.append((shown, meaning, " ".join(got), level))
    if script == "train_2d.py":
        st.notes.append(
            "func_2d.memory_bank=true: Medical-SAM2's 2D training always attends to a bank of earlier images"
        )
    tr.fidelity += [(f"({what})", meaning, " ".join(o), lv) for what, meaning, o, lv in RECIPE[script]]
    if given & {"-pretrain", "-weights"}:  # the pretrain / weights file replaces the SAM checkpoint
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
    if high and not explicit_batch:
        batch = dict(HIGH_MEMORY_BATCH)
        tr.notes.append(
            "--high-memory: batch 16 for Tiny and 12 for Small, as the script sets them (trainer=high_memory "
            "for its bf16 and workers; its own batch table is not used); --batch-size overrides them"
        )
    for flag, value in flags:
        meaning = {
            "--high-memory": (
                "batch 16 for Tiny, 12 for Small",
                "trainer=high_memory, trainer.batch_size=16 / 12",
            ),
            "--parallel": ("both models at the same time", ""),
        }.get(flag, (flag.lstrip("-").replace("-", " "), ""))
        shown = f"{flag} {value}" if value is not None else flag
        tr.fidelity.append(
            (shown, meaning[0], meaning[1], "approximate" if flag == "--parallel" else "exact")
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
        if size == "t":
            tr.fidelity += [row for row in one.fidelity if row[0].startswith("(")]  # the 3D recipe
        cmd = list(one.commands[0])
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
