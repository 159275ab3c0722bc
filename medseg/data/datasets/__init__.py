"""Dataset layouts (one file each), all subclasses of :class:`CaseDataset`; no torch import here."""

from medseg.data.datasets.base import CaseDataset, parse_label_map
from medseg.data.datasets.btcv import BTCV_ORGANS, BTCVDataset
from medseg.data.datasets.folder2d import Folder2DDataset
from medseg.data.datasets.kvasir import KvasirDataset
from medseg.data.datasets.nnunet import NnUNetDataset
from medseg.data.datasets.npz import NpzDataset
from medseg.data.datasets.refuge import RefugeDataset
from medseg.data.datasets.slices import Slices2D

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
