"""Train SAM2's memory-attention propagation through CT/MRI volumes (slices as video frames).

    python train_3d.py experiment=btcv_organs dataset.root=/data/BTCV model.checkpoint=checkpoints/sam2_hiera_small.pt

See README.md for every option and output file.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import sam2_train  # noqa: F401  (imports sam2 and clears the Hydra state it leaves behind)
from medseg.run.app import run
from medseg.run.cli import user_errors_as_one_line


@hydra.main(config_path="conf", config_name="train_3d", version_base="1.3")
@user_errors_as_one_line
def main(cfg: DictConfig) -> float | None:
    return run(cfg, mode="3d", task_key="task_3d")


if __name__ == "__main__":
    main()
