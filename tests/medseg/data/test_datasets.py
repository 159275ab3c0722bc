"""Every layout reads its generated tree and a hand-built tree with real-world quirks; splits; configs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from medseg.data import synthetic as S
from medseg.data.datasets import (
    BTCVDataset,
    Folder2DDataset,
    KvasirDataset,
    NnUNetDataset,
    NpzDataset,
    RefugeDataset,
    Slices2D,
)
from medseg.data.splits import resolve_splits
from medseg.errors import DataError
from tests.data_helpers import ROOT, quirky_affine, quirky_nnunet, refuge_case


def _check_case(case, ndim_img=3):
    assert set(case) >= {"image", "label", "case_id", "spacing", "geometry", "label_names"}
    assert case["image"].dtype == np.float32 and case["image"].ndim == ndim_img
    if case["label"] is not None:
        assert case["label"].dtype == np.int64 and case["label"].shape == case["image"].shape[:3]
    assert all(i >= 1 for i in case["label_names"])


def test_nnunet_generated(tmp_path):
    ds = NnUNetDataset(S.write_nnunet(tmp_path / "d", n_cases=3, depth=8, size=32, n_organs=2))
    assert ds.case_ids == ["case_000", "case_001", "case_002", "case_003"]
    assert [ds.native_split(c) for c in ds.case_ids] == ["train"] * 3 + ["test"]
    case = ds.load_case("case_000")
    _check_case(case)
    assert case["image"].shape == (8, 32, 32) and set(np.unique(case["label"])) <= {0, 1, 2}
    assert case["label_names"] == {1: "organ1", 2: "organ2"}
    np.testing.assert_allclose(case["spacing"], (2.5, 0.8, 0.8), rtol=1e-6)
    assert case["image"].min() < -500  # HU values, not rescaled
    assert ds.load_case("case_003")["label"] is None


def test_nnunet_quirks(tmp_path):
    root, expected = quirky_nnunet(tmp_path / "q")
    ds = NnUNetDataset(root)
    for cid, (hu, lab) in expected.items():
        case = ds.load_case(cid)
        np.testing.assert_allclose(case["image"], hu)
        np.testing.assert_array_equal(case["label"], lab)
        np.testing.assert_allclose(case["geometry"].affine, quirky_affine())
        np.testing.assert_allclose(case["spacing"], (2.5, 0.8, 0.8), rtol=1e-6)
    assert ds.label_names == {1: "liver", 2: "kidney", 3: "spleen"}


def test_msd_layout(tmp_path):
    ds = NnUNetDataset(S.write_nnunet(tmp_path / "msd", n_cases=2, depth=6, size=24, style="msd"))
    assert ds.msd and len(ds) == 3 and ds.native_split(ds.case_ids[-1]) == "test"
    _check_case(ds[0])


def test_label_subset_and_rename(tmp_path):
    root, expected = quirky_nnunet(tmp_path / "q")
    lab = expected["quirk_0"][1]
    keep = NnUNetDataset(root, labels=[3])
    np.testing.assert_array_equal(keep.load_case("quirk_0")["label"], (lab == 3).astype(np.int64))
    assert keep.label_names == {1: "spleen"}
    merged = NnUNetDataset(root, labels={1: [1, 3]}, label_names={1: "organs"})
    np.testing.assert_array_equal(merged.load_case("quirk_0")["label"], np.isin(lab, [1, 3]).astype(np.int64))
    assert merged.label_names == {1: "organs"}
    assert merged.load_case("quirk_0", raw=True)["label"].max() == 3


def test_btcv_sorts_slices_numerically(tmp_path):
    root = S.write_btcv(tmp_path / "b", n_cases=1, depth=12, size=32, n_test=1)
    ds = BTCVDataset(root)
    case = ds.load_case("img0001")
    _check_case(case)
    for k in (2, 10, 11):  # lexicographic order would put 10 and 11 before 2
        np.testing.assert_array_equal(case["label"][k], np.load(root / "Training/mask/img0001" / f"{k}.npy"))
    assert case["label_names"][13] == "left adrenal gland" and len(case["label_names"]) == 13
    assert ds.native_split("img0002") == "test"


def test_refuge_majority_vote_and_targets(tmp_path):
    refuge_case(tmp_path, "g0001")
    cup = RefugeDataset(tmp_path, target="cup").load_case("g0001")
    _check_case(cup, ndim_img=4)
    assert cup["label"][0, 10, 10] == 1 and cup["label"][0, 22, 22] == 0  # 4/7 vs 3/7 votes
    both = RefugeDataset(tmp_path, target="both").load_case("g0001")["label"][0]
    assert both[10, 10] == 2 and both[22, 22] == 1 and both[1, 1] == 0
    disc = RefugeDataset(tmp_path, target="disc").load_case("g0001")["label"][0]
    assert disc[10, 10] == 1 and disc.sum() == 24 * 24


def test_refuge_missing_raters_and_generated(tmp_path):
    refuge_case(tmp_path / "r", "V0001", split="Validation-400", raters=(5, 6, 7))
    with pytest.raises(DataError, match=r"V0001_seg_cup_1_cropped\.jpg: rater mask missing for case 'V0001'"):
        RefugeDataset(tmp_path / "r")  # a vote over 3 of 7 raters is not the ground truth: refused
    case = RefugeDataset(tmp_path / "r", allow_missing_raters=True).load_case("V0001")
    assert case["label"][0, 22, 22] == 1  # asked for: only the 3 raters present vote
    ds = RefugeDataset(S.write_refuge(tmp_path / "g", n=4, size=32), target="both")
    assert sorted(ds.native_split(c) for c in ds.case_ids) == ["test", "train", "train", "val"]
    assert set(np.unique(ds[0]["label"])) == {0, 1, 2}


def test_kvasir_generated_and_jpeg_mask_noise(tmp_path):
    root = S.write_kvasir(tmp_path / "k", n=5, size=32)
    ds = KvasirDataset(root)
    assert ds.bboxes is not None and len(ds.bboxes) == 5
    assert [ds.native_split(c) for c in ds.case_ids] == ["train"] * 4 + ["val"]
    case = ds[0]
    _check_case(case, ndim_img=4)
    assert set(np.unique(case["label"])) == {0, 1}
    raw = np.asarray(Image.open(root / "masks" / f"{ds.case_ids[0]}.jpg").convert("L"))
    assert len(np.unique(raw)) > 2  # the JPEG really is noisy
    np.testing.assert_array_equal(case["label"][0], raw >= 128)


def test_folder2d_binary_ids_and_tiff(tmp_path):
    ds = Folder2DDataset(S.write_folder2d(tmp_path / "f", n=3, size=32, ext=".tif"))
    case = ds[0]
    _check_case(case)
    assert set(np.unique(case["label"])) == {0, 1} and case["label_names"] == {1: "foreground"}
    multi = Folder2DDataset(S.write_folder2d(tmp_path / "m", n=3, size=32, multi=True))
    assert set(np.unique(multi[0]["label"])) == {0, 1, 2}


def test_npz(tmp_path):
    ds = NpzDataset(S.write_npz(tmp_path / "n", n_cases=2, depth=6, size=32))
    case = ds[1]
    _check_case(case)
    assert case["spacing"] == (2.5, 0.8, 0.8)


def test_slices2d(tmp_path):
    vol = NnUNetDataset(S.write_nnunet(tmp_path / "d", n_cases=2, depth=8, size=32, n_test=0))
    sl = Slices2D(vol)
    labelled = sum(int(vol.load_case(c)["label"].reshape(8, -1).any(1).sum()) for c in vol.case_ids)
    assert len(sl) == labelled
    s = sl[0]
    assert s["image"].shape == (1, 32, 32) and s["label"].any() and s["case_id"].startswith("case_000_z")
    assert sl.native_split(s["case_id"]) == "train"
    assert len(Slices2D(vol, only_labelled=False)) == 16
    assert len(sl.subset(sl.case_ids[:2])) == 2


def test_subset_and_transform(tmp_path):
    ds = KvasirDataset(S.write_kvasir(tmp_path / "k", n=4, size=32))
    view = ds.subset(ds.case_ids[2:])
    assert len(view) == 2 and len(ds) == 4 and view[0]["case_id"] == ds.case_ids[2]
    view.transform = lambda c: c["case_id"]
    assert view[1] == ds.case_ids[3] and ds.transform is None


def test_resolve_splits_native_saved_and_reloaded(tmp_path):
    ds = NnUNetDataset(S.write_nnunet(tmp_path / "d", n_cases=6, depth=4, size=16, n_test=2))
    path = tmp_path / "run" / "splits.json"
    s = resolve_splits(ds, {"seed": 1}, path)
    assert s["test"] == ["case_006", "case_007"] and len(s["val"]) == 1 and len(s["train"]) == 5
    path.write_text(json.dumps({"train": ["case_000"], "val": [], "test": []}), encoding="utf-8")
    assert resolve_splits(ds, {"seed": 2}, path)["train"] == ["case_000"]  # never re-drawn


def test_resolve_splits_ratios_and_lists(tmp_path):
    ds = Folder2DDataset(S.write_folder2d(tmp_path / "f", n=10, size=16))
    a = resolve_splits(ds, {"ratios": [0.6, 0.2, 0.2], "seed": 3}, None)
    assert [len(a[k]) for k in ("train", "val", "test")] == [6, 2, 2]
    assert a == resolve_splits(ds, {"ratios": [0.6, 0.2, 0.2], "seed": 3}, None)
    assert sorted(sum(a.values(), [])) == ds.case_ids
    b = resolve_splits(ds, {"train": ds.case_ids[:5], "test": ds.case_ids[5:]}, None)
    assert b["val"] == [] and len(b["test"]) == 5
    f = tmp_path / "s.json"
    f.write_text(json.dumps([{"train": ds.case_ids[:8], "val": ds.case_ids[8:]}]), encoding="utf-8")
    assert resolve_splits(ds, {"file": str(f), "fold": 0}, None)["val"] == ds.case_ids[8:]


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "conf" / "dataset").glob("*.yaml")))
def test_dataset_configs_instantiate(tmp_path, name):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from medseg.data.transforms import parse_intensity

    writers = {
        "nnunet": lambda r: S.write_nnunet(r, 2, 4, 16, 2),
        "btcv": lambda r: S.write_btcv(r, 1, 4, 16),
        "refuge": lambda r: S.write_refuge(r, 2, 16),
        "kvasir": lambda r: S.write_kvasir(r, 2, 16),
        "folder2d": lambda r: S.write_folder2d(r, 2, 16),
        "npz": lambda r: S.write_npz(r, 1, 4, 16),
    }
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="verify_dataset", overrides=[f"dataset={name}", f"dataset.root={tmp_path}"])
    writer = writers.get(name)
    if writer is None:  # derived configs (e.g. flare22_adrenal) point at an nnunet tree with those ids
        assert cfg.dataset._target_ == "medseg.data.datasets.NnUNetDataset"
        S.write_nnunet(tmp_path, 1, 4, 16, n_organs=max(max(cfg.dataset.labels), 1), n_test=0)
    else:
        writer(tmp_path)
    ds = instantiate(cfg.dataset)
    assert len(ds) > 0 and ds[0]["image"].dtype == np.float32
    parse_intensity(cfg.dataset.intensity)
