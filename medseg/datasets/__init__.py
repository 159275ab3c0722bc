"""Dataset layouts (one file each), all subclasses of :class:`CaseDataset`; no torch import here."""

from medseg.datasets.base import CaseDataset, parse_label_map
from medseg.datasets.btcv import BTCV_ORGANS, BTCVDataset
from medseg.datasets.folder2d import Folder2DDataset
from medseg.datasets.kvasir import KvasirDataset
from medseg.datasets.nnunet import NnUNetDataset
from medseg.datasets.npz import NpzDataset
from medseg.datasets.refuge import RefugeDataset
from medseg.datasets.slices import Slices2D

__all__ = [
    "BTCV_ORGANS",
    "BTCVDataset",
    "CaseDataset",
    "Folder2DDataset",
    "KvasirDataset",
    "NnUNetDataset",
    "NpzDataset",
    "RefugeDataset",
    "Slices2D",
    "build_dataset",
    "parse_label_map",
]


def build_dataset(cfg, **overrides) -> CaseDataset:
    """Instantiate ``cfg`` (the ``dataset`` config group, with ``_target_``) with optional overrides."""
    from hydra.utils import instantiate

    return instantiate(cfg, **overrides)
