"""Segment whole CT/MRI volumes with any model's checkpoint and write .npy + NIfTI masks, pictures, metrics.

    python inference_3d.py checkpoint=outputs/train_3d/runs/.../checkpoint_best.pth dataset=nnunet \
        dataset.root=/data/Dataset001 split=test prompt=box output_dir=preds save_vis=true

SAM2 propagates the prompts through the volume; SAM/MedSAM, CNN and YOLO segment slice by slice (each
organ's key-slice prompt carried over the slices it spans). Our checkpoints name their model; a native
weights file (Meta's SAM2 .pt, SAM/MedSAM .pth) needs model=<name>.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import sam2_train  # noqa: F401  (imports sam2 and clears the Hydra state it leaves behind)
from func_3d.inference import run_inference
from medseg.run.cli import user_errors_as_one_line


@hydra.main(config_path="conf", config_name="inference_3d", version_base="1.3")
@user_errors_as_one_line
def main(cfg: DictConfig) -> None:
    run_inference(cfg)


if __name__ == "__main__":
    main()
