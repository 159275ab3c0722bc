"""``make demo``: the suite end to end on built-in synthetic data, on a CPU, in a few minutes.

1. 2D: a synthetic Kvasir-SEG tree; SAM2.1 Hiera-T (random init: Meta's weights cannot be fetched
   here) fine-tuned at 128 px with box prompts; Dice is printed before training and after each epoch.
2. 3D: a synthetic CT set in nnU-Net layout; SAM2's propagation trained on 8-slice clips, then
   ``inference_3d.py`` writes .npy + .nii.gz + pictures and the per-organ Dice table.

Everything lands in ``demo_out/`` (override with ``--out``). With real weights, add
``model.checkpoint=checkpoints/sam2.1_hiera_tiny.pt`` to the same commands.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run(cmd: list[str]) -> None:
    print("\n$ " + " ".join(cmd), flush=True)
    r = subprocess.run([sys.executable, *cmd], cwd=ROOT)
    if r.returncode != 0:
        sys.exit(f"demo step failed (exit {r.returncode}): {' '.join(cmd)}")


def dice_table(metrics_csv: Path) -> str:
    with open(metrics_csv, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    hd = [k for k in (rows[0] if rows else {}) if k.startswith("val/hd95_") and "/" not in k[4:]]
    col = hd[0] if hd else "val/hd95_mm"  # one unit per dataset: mm, or px/voxel without spacing
    lines = [f"epoch  step  val/dice  val/hd95({col.rsplit('_', 1)[-1]})"]
    for r in rows:
        if r.get("val/dice"):
            lines.append(
                f"{r['epoch']:>5}  {r['step']:>4}  {float(r['val/dice']):8.3f}  {float(r.get(col) or 'nan'):12.2f}"
            )
    return "\n".join(lines)


DEMO_ENTRIES = {
    "data",
    "train_2d",
    "train_3d",
    "inference_3d",
    "predictions_3d",
}  # what a demo writes in --out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="demo_out")
    ap.add_argument("--skip-3d", action="store_true")
    ap.add_argument("--device", default="auto", help="trainer.device of every stage: auto | cpu | cuda")
    args = ap.parse_args(argv)
    from medseg.data import synthetic

    out = (ROOT / args.out).resolve()
    foreign = sorted(p.name for p in out.iterdir() if p.name not in DEMO_ENTRIES) if out.is_dir() else []
    if out.exists() and (not out.is_dir() or foreign):
        what = f"holds {', '.join(foreign[:3])}" if foreign else "is a file"
        print(f"error: --out {out} {what}, which the demo did not write; give another --out", file=sys.stderr)
        return 2  # a folder of the user's is never deleted
    if out.exists():
        shutil.rmtree(out)  # an earlier demo's outputs only
    t0 = time.time()
    common = [f"trainer.device={args.device}", "trainer.num_workers=0", "trainer.progress_bar=false"]

    # ---------------------------------------------------------------- 2D
    kv = synthetic.write_kvasir(out / "data" / "kvasir", n=48, size=128)
    run2d = out / "train_2d"
    run(
        [
            "train_2d.py",
            f"dataset.root={kv}",
            "model=sam2.1_hiera_t",
            "model.image_size=128",
            "model.checkpoint=null",
            "prompt=box",
            "trainer.max_epochs=4",
            "trainer.batch_size=4",
            "trainer.limit_train_batches=8",
            "trainer.limit_val_batches=8",
            "trainer.val_freq=1",
            "trainer.val_before_training=true",
            "optim.lr=3e-4",
            "scheduler=constant",
            "vis=true",
            f"hydra.run.dir={run2d}",
            *common,
        ]
    )
    print("\n2D fine-tuning (validation Dice per epoch; epoch 0 = before training):")
    print(dice_table(run2d / "metrics.csv"))

    # ---------------------------------------------------------------- 3D
    if not args.skip_3d:
        nn = synthetic.write_nnunet(
            out / "data" / "Dataset001_Synthetic", n_cases=6, depth=16, size=64, n_organs=2
        )
        run3d = out / "train_3d"
        run(
            [
                "train_3d.py",
                f"dataset.root={nn}",
                "model=sam2.1_hiera_t",
                "model.image_size=64",
                "model.checkpoint=null",
                "prompt=box",
                "func_3d.video_length=6",
                "trainer.max_epochs=6",
                "trainer.batch_size=1",
                "trainer.limit_train_batches=6",
                "trainer.val_freq=2",
                "trainer.val_before_training=true",
                "optim.lr=3e-4",
                "scheduler=constant",
                f"hydra.run.dir={run3d}",
                *common,
            ]
        )
        print("\n3D propagation training (volumetric validation Dice):")
        print(dice_table(run3d / "metrics.csv"))
        preds = out / "predictions_3d"
        run(
            [
                "inference_3d.py",
                f"checkpoint={run3d / 'checkpoint_best.pth'}",
                "dataset=nnunet",
                f"dataset.root={nn}",
                "split=val",
                "prompt=box",
                f"output_dir={preds}",
                "save_vis=true",
                f"trainer.device={args.device}",
                f"hydra.run.dir={out / 'inference_3d'}",
            ]
        )
        with open(preds / "metrics.csv", encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        print("\nPer-case, per-organ Dice of inference_3d:")
        print("case        organ      dice    hd95")
        for r in rows:
            print(
                f"{r['case_id']:<11} {r['class_name']:<9} {float(r['dice'] or 'nan'):6.3f}  "
                f"{float(r['hd95'] or 'nan'):8.2f} {r.get('hd95_unit', '')}"
            )

    print(f"\nDone in {time.time() - t0:.0f} s. Outputs in {out}:")
    print(f"  {run2d}: checkpoint_best.pth, metrics.csv, val_cases.csv, splits.json, vis/, tensorboard/")
    if not args.skip_3d:
        print(
            f"  {out / 'train_3d'}: the same for 3D;  {out / 'predictions_3d'}: <case>.npy, <case>.nii.gz, metrics.csv, vis/"
        )
    print(f"  tensorboard --logdir {out}")
    print("  open in a browser (offline):", *sorted(map(str, out.glob("*/report.html"))), sep="\n    ")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
