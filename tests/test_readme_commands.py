"""Every command in README.md's ```bash blocks runs, as written, against synthetic data (issue 23).

The README is read at test time: its ```bash blocks are split into commands (``\\`` continuations joined,
comments dropped, a ``for ... done`` loop kept as one command) and each command must appear in
``COMMANDS`` below, which says the only ways the run differs from the README:

* path substitutions (``/data/...`` -> the synthetic trees in the work folder, placeholders such as
  ``<run>``, ``runA`` or ``...``); ``$nnUNet_raw`` and ``checkpoints/sam2.1_hiera_tiny.pt`` need none: the
  work folder has them (a Meta-format Hiera-T at 64 px, random weights);
* tiny-size overrides appended (64 px, one epoch of two batches, CPU);
* stand-ins for what cannot exist here: ``sbatch``/``srun``/``scontrol`` (``STANDINS`` below: sbatch
  runs the batch script with bash, srun starts its tasks locally), ``launcher=slurm`` ->
  ``launcher=submitit_local``, ``torchrun --nproc_per_node=N`` -> ``N=2`` (gloo), Meta's files of other
  variants than SAM2.1 Hiera-T -> ``model.checkpoint=null``.

A README command the table does not know fails ``test_every_readme_command_is_in_the_table``: a new
README command needs a row here, so the README cannot rot unseen. Runs are done in one work folder per
module, as a user would in one checkout (a command that reads another's output names it in ``needs``).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port

README = ROOT / "README.md"

# ------------------------------------------------------------------------------- the overrides appended
_RUN = ["trainer.device=cpu", "trainer.num_workers=0", "trainer.progress_bar=false"]
_EPOCH = ["model.image_size=64", "trainer.max_epochs=1", "trainer.limit_val_batches=2"]
TINY_2D = [*_EPOCH, "trainer.limit_train_batches=2", "trainer.batch_size=2", *_RUN]
TINY_3D = [*_EPOCH, "trainer.limit_train_batches=1", "trainer.batch_size=1", "func_3d.video_length=4", *_RUN]
# variants whose Meta file is not in the work folder (only SAM2.1 Hiera-T is)
NO_META = ["model.checkpoint=null"]
INFER = ["trainer.device=cpu"]


@dataclass(frozen=True)
class Row:
    """How one README command is run here: ``subs`` (old, new) text substitutions, ``extra`` overrides
    appended (inside a ``for`` loop: to its command), ``slow`` (> ~10 s: ``make test-full`` only),
    ``needs`` (README commands whose outputs this one reads), ``excluded`` (why it is not run here)."""

    subs: tuple[tuple[str, str], ...] = ()
    extra: tuple[str, ...] = ()
    slow: bool = True
    needs: tuple[str, ...] = ()
    excluded: str = ""
    env: dict = field(default_factory=dict)


DATA_SUBS = (("/data/", "data/"),)
KV = "dataset.root=data/Kvasir-SEG"

# README command (exactly as in README.md, continuations joined, comment dropped) -> Row
COMMANDS: dict[str, Row] = {
    # top: `make demo` is `make venv` (built) + tools/demo.py (its runs go to --out); `make test` is this suite
    "make demo": Row(subs=(("make demo", "python tools/demo.py --device cpu --out {work}/demo_out"),)),
    "make test": Row(excluded="`make test` runs this file"),
    # 2. Data
    "python tools/verify_dataset.py dataset=nnunet dataset.root=/data/Dataset001_Liver": Row(
        subs=DATA_SUBS, slow=False
    ),
    # 3. 2D fine-tuning
    "python train_2d.py experiment=kvasir_finetune dataset=kvasir dataset.root=/data/Kvasir-SEG "
    "model=sam2.1_hiera_t model.image_size=1024 model.checkpoint=checkpoints/sam2.1_hiera_tiny.pt "
    "prompt=box trainer.max_epochs=20 trainer.batch_size=4 trainer.val_freq=1 trainer.device=cuda "
    "hydra.run.dir=outputs/kvasir_t": Row(subs=DATA_SUBS, extra=tuple(TINY_2D)),
    # 4. 3D
    "python train_3d.py experiment=nnunet_multiorgan dataset.root=$nnUNet_raw/Dataset022_FLARE22 "
    "model.checkpoint=checkpoints/sam2.1_hiera_tiny.pt": Row(extra=tuple(TINY_3D)),
    "python inference_3d.py checkpoint=outputs/nnunet_multiorgan/runs/<run>/checkpoint_best.pth dataset=nnunet "
    "dataset.root=$nnUNet_raw/Dataset022_FLARE22 split=val prompt=box output_dir=preds save_vis=true": Row(
        subs=(("<run>", "{nnunet_multiorgan_run}"),),
        extra=tuple(INFER),
        needs=("python train_3d.py experiment=nnunet_multiorgan",),
    ),
    # 5. Baselines and comparisons
    "python train_2d.py model=resnet_box_prompt dataset=kvasir dataset.root=/data/Kvasir-SEG loss=dice_bce": Row(
        subs=DATA_SUBS, extra=tuple(TINY_2D)
    ),
    "python train_2d.py model=resnet50_frozen_decoder model.net.encoder_weights=/weights/resnet50.pth ...": Row(
        subs=(("/weights/", "weights/"), ("...", KV)), extra=tuple(TINY_2D)
    ),
    "python train_2d.py model=unet ...": Row(subs=(("...", KV),), extra=tuple(TINY_2D)),
    "python train_2d.py model=yolo_seg model.net.yolo_cfg=yolo11s-seg.yaml ...": Row(
        subs=(("...", KV),), extra=tuple(TINY_2D)
    ),
    "python tools/compare.py outputs/runA outputs/runB outputs/runC --out outputs/comparison": Row(
        subs=(("runA", "cmp/sam2.1_hiera_t"), ("runB", "cmp/resnet_box_prompt"), ("runC", "cmp/unet")),
        needs=("for m in",),
    ),
    "python train_2d.py -m experiment=kvasir_baselines dataset.root=/data/Kvasir-SEG "
    "sam2_checkpoint=checkpoints/sam2.1_hiera_tiny.pt": Row(subs=DATA_SUBS, extra=tuple(TINY_2D)),
    "DATA=/data/Kvasir-SEG sbatch train_slurm.sh resnet experiment=kvasir_finetune": Row(
        subs=DATA_SUBS, extra=tuple(TINY_2D)
    ),
    "python -c \"from medseg.data.synthetic import write_kvasir; write_kvasir('data/kv', n=24, size=96)\"": Row(
        slow=False
    ),
    "for m in sam2.1_hiera_t resnet_box_prompt unet; do "
    "python train_2d.py model=$m dataset.root=data/kv model.image_size=96 trainer.max_epochs=2 vis=true "
    "loss=dice_bce model.checkpoint=null trainer.device=cpu hydra.run.dir=outputs/cmp/$m; done": Row(
        extra=tuple(TINY_2D),
        needs=("python -c",),
        env={"SAM2_CHECKPOINT_DIR": "no-weights-downloaded"},  # the example runs without Meta's files
    ),
    "python tools/compare.py outputs/cmp/* --out outputs/cmp_report": Row(needs=("for m in",)),
    # 6. Sweeps, clusters
    "python train_3d.py -m model=sam2.1_hiera_t,sam2.1_hiera_s,sam2.1_hiera_b+,sam2.1_hiera_l "
    "experiment=btcv_organs dataset.root=/data/btcv": Row(subs=DATA_SUBS, extra=(*TINY_3D, *NO_META)),
    "python train_3d.py -m launcher=slurm hydra.launcher.partition=gpu hydra.launcher.gpus_per_node=1 "
    "model=sam2.1_hiera_t,sam2.1_hiera_s ...": Row(
        subs=(
            (
                "launcher=slurm hydra.launcher.partition=gpu hydra.launcher.gpus_per_node=1",
                "launcher=submitit_local",
            ),
            ("...", "experiment=btcv_organs dataset.root=data/btcv"),
        ),
        extra=(*TINY_3D, *NO_META),
    ),
    "torchrun --nproc_per_node=4 train_3d.py experiment=btcv_organs dataset.root=/data/btcv trainer.batch_size=1": Row(
        subs=(*DATA_SUBS, ("--nproc_per_node=4", "--nproc_per_node=2")), extra=(*TINY_3D, *NO_META)
    ),
    "python train_2d.py -m hparams_search=optuna experiment=kvasir_finetune dataset.root=/data/Kvasir-SEG": Row(
        subs=DATA_SUBS, extra=(*TINY_2D, "hydra.sweeper.n_trials=2")
    ),
    "torchrun --nproc_per_node=8 train_3d.py experiment=btcv_organs dataset.root=/data/btcv trainer.batch_size=1": Row(
        subs=(*DATA_SUBS, ("--nproc_per_node=8", "--nproc_per_node=2")), extra=(*TINY_3D, *NO_META)
    ),
    "python train_3d.py -m launcher=slurm hydra.launcher.partition=gpu hydra.launcher.gpus_per_node=8 "
    "hydra.launcher.nodes=2 experiment=btcv_organs dataset.root=/data/btcv": Row(
        subs=(
            *DATA_SUBS,
            (
                "launcher=slurm hydra.launcher.partition=gpu hydra.launcher.gpus_per_node=8 hydra.launcher.nodes=2",
                "launcher=submitit_local",
            ),
        ),
        extra=(*TINY_3D, *NO_META),
    ),
    "DATA=/data/Kvasir-SEG bash train_slurm.sh --gpus 8 --nodes 2 sam2.1_t experiment=kvasir_finetune": Row(
        subs=(*DATA_SUBS, ("--gpus 8 --nodes 2", "--gpus 2 --nodes 1")),
        extra=(*TINY_2D, "trainer.batch_size=1"),
    ),
    "DATA=/data/Kvasir-SEG sbatch train_slurm.sh sam2.1_t experiment=kvasir_finetune": Row(
        subs=DATA_SUBS, extra=tuple(TINY_2D)
    ),
    "python train_2d.py -m launcher=submitit_local trainer.batch_size=1 dataset.root=/data/Kvasir-SEG": Row(
        subs=DATA_SUBS, extra=(*TINY_2D, "trainer.batch_size=1")
    ),
    # Coming from Medical-SAM2
    'python tools/from_medical_sam2.py "python train_2d.py -net sam2 -exp_name REFUGE_MedSAM2 -vis 1 '
    "-sam_ckpt ./checkpoints/sam2_hiera_small.pt -sam_config sam2_hiera_s -image_size 1024 -out_size 1024 "
    '-b 4 -val_freq 1 -dataset REFUGE -data_path ./data/REFUGE"': Row(slow=False),
    # --run starts `python train_3d.py ...` itself: SITECUSTOMIZE (below) appends the overrides
    "python tools/from_medical_sam2.py --run -- bash train_both_models.sh --high-memory": Row(
        env={"README_APPEND": " ".join([*TINY_3D, *NO_META])}
    ),
}


# ------------------------------------------------------------------------------- reading the README
def _strip_comment(line: str) -> str:
    """``line`` without a trailing shell comment (a ``#`` after blank space, outside quotes)."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def readme_commands(text: str | None = None) -> list[tuple[str, str]]:
    """``(section, command)`` for every command of README's ```bash blocks, in order."""
    text = README.read_text(encoding="utf-8") if text is None else text
    out, section = [], "top"
    for block_or_head in re.finditer(r"^(#{2,3}) ([^\n]+)$|^```bash\n(.*?)^```", text, re.M | re.S):
        if block_or_head.group(2):
            head = block_or_head.group(2).strip()
            m = re.match(r"(\d+[a-z]?)\.", head)
            section = m.group(1) if m else re.sub(r"[^a-z0-9]+", "-", head.lower()).strip("-")
            continue
        pending, loop_cmd = "", ""
        for raw in block_or_head.group(3).splitlines():
            line = _strip_comment(raw).strip()
            if not line and not pending:
                continue
            if line.endswith("\\"):
                pending += line[:-1].strip() + " "
                continue
            cmd = (pending + line).strip()
            pending = ""
            if loop_cmd or cmd.startswith("for "):  # a loop is one command, up to its `done`
                loop_cmd = f"{loop_cmd} {cmd}".strip()
                if re.search(r"(;|\s)\s*done$", loop_cmd):
                    out.append((section, loop_cmd))
                    loop_cmd = ""
                continue
            out.append((section, cmd))
    return out


def _id(section: str, cmd: str, seen: set) -> str:
    base = f"{section}: {' '.join(cmd.split()[:4])}"[:72]
    n, name = 2, base
    while name in seen:
        name, n = f"{base} #{n}", n + 1
    seen.add(name)
    return name


def _params():
    seen: set = set()
    out = []
    for section, cmd in readme_commands():
        row = COMMANDS.get(cmd)
        if row is not None and row.excluded:
            continue
        marks = [pytest.mark.slow] if row is None or row.slow else []
        out.append(pytest.param(cmd, id=_id(section, cmd, seen), marks=marks))
    return out


# ------------------------------------------------------------------------------- the work folder
STANDINS = {
    # sbatch: run the batch script here, as SLURM would on the node, with the allocation asked for
    "sbatch": """#!/usr/bin/env bash
nodes=1; tasks=1
while [ $# -gt 0 ]; do case "$1" in
  --nodes=*) nodes="${1#*=}"; shift ;; --ntasks-per-node=*) tasks="${1#*=}"; shift ;; --*) shift ;; *) break ;;
esac; done
export SLURM_JOB_ID=4242 SLURM_SUBMIT_DIR="$PWD" SLURM_JOB_NUM_NODES="$nodes" SLURM_NTASKS_PER_NODE="$tasks"
export SLURM_NTASKS=$((nodes * tasks)) SLURM_JOB_NODELIST=localhost
exec bash "$@"
""",
    # srun: one local process per task with SLURM's rank variables
    "srun": """#!/usr/bin/env bash
while [ $# -gt 0 ]; do case "$1" in --*) shift ;; *) break ;; esac; done
n="${SLURM_NTASKS:-1}"; pids=()
for ((r = 0; r < n; r++)); do SLURM_PROCID=$r SLURM_LOCALID=$r "$@" & pids+=($!); done
rc=0; for p in "${pids[@]}"; do wait "$p" || rc=$?; done; exit $rc
""",
    "scontrol": "#!/bin/sh\necho localhost\n",
}
# README_APPEND (a row's env) is appended to the arguments of an entry point that a command starts itself
# (from_medical_sam2.py --run starts `python train_3d.py ...` with its own interpreter): this
# sitecustomize on PYTHONPATH extends sys.argv before the entry point reads it
SITECUSTOMIZE = """import os, sys
if os.environ.get("README_APPEND") and sys.argv[0].endswith(("train_2d.py", "train_3d.py", "inference_3d.py")):
    sys.argv += os.environ["README_APPEND"].split()
"""


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """One checkout as a user has it: the entry points, conf/ and .venv (links), the synthetic data at the
    README's paths, a Meta-format Hiera-T in checkpoints/, the stand-ins on PATH."""
    import torch

    from medseg.data import synthetic
    from sam2_train import build_sam2_model

    w = tmp_path_factory.mktemp("readme")
    for name in ("train_2d.py", "train_3d.py", "inference_3d.py", "train_slurm.sh", "tools", "conf", ".venv"):
        (w / name).symlink_to(ROOT / name)
    synthetic.write_kvasir(w / "data" / "Kvasir-SEG", n=8, size=64)
    synthetic.write_nnunet(w / "data" / "Dataset001_Liver", n_cases=3, depth=6, size=32, n_organs=2)
    synthetic.write_nnunet(w / "nnunet_raw" / "Dataset022_FLARE22", n_cases=4, depth=6, size=32, n_organs=2)
    synthetic.write_btcv(w / "data" / "btcv", n_cases=3, depth=6, size=32)
    (w / "checkpoints").mkdir()
    torch.manual_seed(0)
    model = build_sam2_model("sam2.1_hiera_t", image_size=64, checkpoint=None)
    torch.save({"model": model.state_dict()}, w / "checkpoints" / "sam2.1_hiera_tiny.pt")
    bin_ = w / ".standins"
    bin_.mkdir()
    for tool, text in STANDINS.items():
        (bin_ / tool).write_text(text, encoding="utf-8")
        (bin_ / tool).chmod(0o755)
    (bin_ / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    return w


def _resnet50_weights(w: Path) -> None:
    """``/weights/resnet50.pth``: torchvision's ResNet-50 layout, random weights."""
    import torch
    import torchvision

    path = w / "weights" / "resnet50.pth"
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)


def _command(cmd: str, row: Row, w: Path) -> str:
    """The README command as run here: substitutions made, overrides appended (inside a loop: to its body)."""
    for old, new in row.subs:
        assert old in cmd, f"substitution {old!r} not in {cmd!r}"
        if "{nnunet_multiorgan_run}" in new:
            runs = sorted((w / "outputs" / "nnunet_multiorgan" / "runs").iterdir())
            new = runs[-1].name
        cmd = cmd.replace(old, new.replace("{work}", str(w)))
    extra = " ".join(shlex.quote(e) for e in row.extra)
    if not extra:
        return cmd
    if cmd.startswith("for "):
        return re.sub(r";\s*done$", f" {extra}; done", cmd)
    return f"{cmd} {extra}"


_done: dict[str, subprocess.CompletedProcess] = {}


def _run(cmd: str, w: Path) -> subprocess.CompletedProcess:
    if cmd in _done:
        return _done[cmd]
    row = COMMANDS[cmd]
    for prefix in row.needs:
        (need,) = [c for c in COMMANDS if c.startswith(prefix)]
        r = _run(need, w)
        assert r.returncode == 0, f"{need!r} (needed) failed"
    if "resnet50.pth" in cmd:
        _resnet50_weights(w)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SAM2_CHECKPOINT_DIR"))}
    env.update(
        PATH=f"{w / '.standins'}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
        nnUNet_raw=str(w / "nnunet_raw"),
        PET_MASTER_PORT=str(free_port()),  # torchrun's --master_port
        PYTHONUTF8="1",
        **row.env,
    )
    if "train_slurm.sh" in cmd:  # its default port is derived from the job id: a free one here
        env["MASTER_PORT"] = str(free_port())
    if "README_APPEND" in row.env:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(w / ".standins"), env.get("PYTHONPATH")]))
    run = _command(cmd, row, w)
    r = subprocess.run(
        ["bash", "-c", f"set -eo pipefail\n{run}"],
        cwd=w,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=env,
        timeout=1800,
    )
    _done[cmd] = r
    return r


# ------------------------------------------------------------------------------- the tests
def test_every_readme_command_is_in_the_table():
    """A README command without a row fails here (add the row); a row without its README command too."""
    cmds = [c for _, c in readme_commands()]
    assert len(cmds) >= 20
    unknown = [c for c in cmds if c not in COMMANDS]
    assert not unknown, f"README commands that tests/test_readme_commands.py does not know: {unknown}"
    stale = [c for c in COMMANDS if c not in cmds]
    assert not stale, f"rows of COMMANDS that are no longer in README.md: {stale}"


def test_the_reader_joins_continuations_drops_comments_and_keeps_loops():
    text = (
        "### 9. Demo\n```bash\n# a comment\npython a.py x=1 \\\n    y=2   # says what\n"
        "for m in a b; do\n  python b.py m=$m \\\n   z=3; done\necho '# not a comment'\n```\n"
    )
    assert readme_commands(text) == [
        ("9", "python a.py x=1 y=2"),
        ("9", "for m in a b; do python b.py m=$m z=3; done"),
        ("9", "echo '# not a comment'"),
    ]


@pytest.mark.parametrize("cmd", _params())
def test_readme_command_runs(cmd, work):
    row = COMMANDS.get(cmd)
    assert row is not None, f"README command not in COMMANDS (add a row): {cmd}"
    r = _run(cmd, work)
    tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-25:])
    assert r.returncode == 0, (
        f"README command failed (exit {r.returncode}):\n$ {_command(cmd, row, work)}\n{tail}"
    )
