"""Translate a Medical-SAM2 / Medical SAM2-N command line into this suite's Hydra command.

    python tools/from_medical_sam2.py "python train_2d.py -net sam2 -exp_name X -sam_ckpt ./checkpoints/sam2_hiera_small.pt \
        -sam_config sam2_hiera_s -image_size 1024 -b 4 -val_freq 1 -dataset REFUGE -data_path ./data/REFUGE"
    python tools/from_medical_sam2.py --run -- python train_3d.py -net sam2 -sam_config sam2_hiera_t ...
    python tools/from_medical_sam2.py "bash train_both_models.sh --high-memory"

Understood: ``train_2d.py`` / ``train_3d.py`` (Medical-SAM2's ``cfg.py`` flags), Medical SAM2-N's
``inference_3d.py`` and ``train_both_models.sh``. Every flag is either translated into an override, or
explained in a note (a flag with no effect here), or listed as *unknown*: nothing is dropped silently.
Medical-SAM2's fixed training recipe is translated too (Adam without weight decay, 3D: image and prompt
encoders frozen, memory modules at lr 1e-8; BCEWithLogits(pos_weight=2); constant learning rate;
validation on ``Test``: ``optim=medical_sam2_adam loss=medical_sam2_bce scheduler=constant ...``), and a
fidelity table (flag, Medical-SAM2's meaning, the override here, exact / approximate / ignored) follows
the command. A glob (``-checkpoint ./logs/X_*/...``) stays a glob the shell expands.
Flags a Medical-SAM2 script would take from its defaults (batch 1, validation every 5 epochs, 100
epochs, ...) are written out so that the run is the same, and the notes say which came from defaults.

``--run`` executes the command (refused while unknown flags remain). Exit status: 0, 1 when flags are
unknown, 2 when the command is not a Medical-SAM2 command. Imports no torch.

This file is the command line; the flag table is ``tools/medical_sam2/flags.py`` and the translation
``tools/medical_sam2/translate.py``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.medical_sam2 import SCRIPTS, TranslationError, translate  # noqa: E402
from tools.medical_sam2.translate import expand_globs  # noqa: E402


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
        try:
            commands = [expand_globs(c) for c in tr.commands]  # as the printed command's shell would
        except TranslationError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        for cmd in commands:
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
