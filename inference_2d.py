"""Segment a folder of 2D images with any model's checkpoint and write PNG + .npy masks (metrics with masks).

    python inference_2d.py checkpoint=outputs/train_2d/runs/.../checkpoint_best.pth input_dir=images \
        prompts_file=boxes.json output_dir=preds [mask_dir=masks] [save_vis=true] [prompt=none]

Our checkpoints say their model; a family's native weights file needs model=<name>.
See medseg/run/inference_2d.py for the outputs and the prompts file schema.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import sam2_train  # noqa: F401  (imports sam2 and clears the Hydra state it leaves behind)
from medseg.run.cli import user_errors_as_one_line
from medseg.run.inference_2d import run_inference_2d


@hydra.main(config_path="conf", config_name="inference_2d", version_base="1.3")
@user_errors_as_one_line
def main(cfg: DictConfig) -> None:
    run_inference_2d(cfg)


if __name__ == "__main__":
    main()
