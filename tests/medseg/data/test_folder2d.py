"""dataset=folder2d on the mask files people have (issue 12, defect 3): 0/255 and 0/1 masks in L, RGB
or RGBA, 16-bit masks, JPEG noise, label ids; ``mask_mode=auto`` decided once per dataset and logged;
an undecidable folder is one error naming a file and ``dataset.mask_mode``."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from medseg.data import synthetic as S
from medseg.data.datasets import Folder2DDataset
from medseg.data.io import read_label
from medseg.errors import DataError
from medseg.eval.tables import read_csv
from tests.conftest import run_entry

BINARY_STYLES = ("L01", "RGB", "RGBA", "I16", "jpeg")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The 0/255 L-mask folder every other style of the same seed must equal."""
    return Folder2DDataset(S.write_folder2d(tmp_path_factory.mktemp("ref"), n=3, size=32))


def test_colour_and_16bit_label_files_read_as_grey(tmp_path):
    m = np.zeros((6, 6), np.uint8)
    m[1:4, 2:5] = 255
    Image.fromarray(np.stack([m, 0 * m, 0 * m, m], -1), "RGBA").save(tmp_path / "red.png")
    Image.fromarray(np.stack([m // 255 * 7] * 3, -1)).save(tmp_path / "grey_rgb.png")
    Image.fromarray(m.astype(np.uint16) * 257).save(tmp_path / "u16.png")
    assert set(np.unique(read_label(tmp_path / "red.png")[0])) == {0, 255}  # was 76 (luminance of red)
    assert set(np.unique(read_label(tmp_path / "grey_rgb.png")[0])) == {0, 7}  # equal channels: exact
    assert set(np.unique(read_label(tmp_path / "u16.png")[0])) == {0, 65535}


def test_colour_coded_classes_are_not_merged_silently(tmp_path):
    """A lossless class map in colours (red = one class, green = another) went grey as the brightest
    channel: both 255, one class. Now: one error naming the file and the option that reads it as binary;
    a single colour with off-by-one pixels (an editor's anti-aliasing) still reads."""
    root = S.write_folder2d(tmp_path / "c", n=3, size=32, mask_style="RGB")
    m = np.zeros((32, 32, 3), np.uint8)
    m[2:10, 2:10] = (255, 0, 0)
    m[20:28, 20:28] = (0, 255, 0)
    Image.fromarray(m).save(root / "masks" / "sample_001.png")
    with pytest.raises(DataError) as e:
        Folder2DDataset(root)
    msg = str(e.value)
    assert msg.startswith(str(root / "masks" / "sample_001.png")) and "green, red" in msg
    assert "dataset.mask_mode=binary" in msg and "\n" not in msg
    both = Folder2DDataset(root, mask_mode="binary").load_case("sample_001")["label"]
    assert both[0, 5, 5] == 1 and both[0, 24, 24] == 1  # binary: every colour is object
    m[20:28, 20:28] = (255, 1, 0)  # the same red, slightly off
    Image.fromarray(m).save(root / "masks" / "sample_001.png")
    assert Folder2DDataset(root).label_names == {1: "foreground"}


@pytest.mark.parametrize("style", BINARY_STYLES)
def test_binary_styles_hold_the_reference_objects(style, reference, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="medseg.data.datasets.folder2d"):
        ds = Folder2DDataset(S.write_folder2d(tmp_path, n=3, size=32, mask_style=style, rgb=True))
    assert ds.label_names == {1: "foreground"}
    decided = [r.getMessage() for r in caplog.records if "mask_mode=auto -> binary" in r.getMessage()]
    assert len(decided) == 1, caplog.text  # once per dataset, not per file
    for i in range(len(ds)):
        case, ref = ds[i], reference[i]
        assert case["image"].shape == (1, 32, 32, 3)
        agree = (case["label"] == ref["label"]).mean()
        assert agree >= (0.98 if style == "jpeg" else 1.0), (style, i, agree)
        assert ref["label"].any()


def test_label_ids_are_decided_for_the_dataset_not_per_file(tmp_path):
    root = S.write_folder2d(tmp_path, n=3, size=32, multi=True)
    only_two = np.zeros((32, 32), np.uint8)
    only_two[4:12, 4:12] = 2  # alone in its file this would look binary; the folder says ids
    Image.fromarray(only_two).save(root / "masks" / "sample_001.png")
    ds = Folder2DDataset(root)
    assert ds.label_names == {1: "label_1", 2: "label_2"}
    assert set(np.unique(ds.load_case("sample_001")["label"])) == {0, 2}


@pytest.mark.parametrize("style", ["soft", "mixed"])
def test_undecidable_folder_is_one_error_naming_a_file_and_the_option(style, tmp_path):
    root = S.write_folder2d(tmp_path, n=3, size=32, mask_style="L255" if style == "mixed" else style)
    if style == "mixed":  # one 0/1 file among 0/255 ones: two binary scales, or label ids 1 and 255?
        S.MASK_STYLES["L01"](
            read_label(root / "masks" / "sample_002.png")[0][0] > 0, root / "masks" / "sample_002"
        )
    with pytest.raises(DataError) as e:
        Folder2DDataset(root)
    msg = str(e.value)
    assert "\n" not in msg and "dataset.mask_mode" in msg
    assert msg.startswith(str(root / "masks" / "sample_00")), msg
    ok = Folder2DDataset(root, mask_mode="binary")  # the option the error names resolves it
    assert ok.label_names == {1: "foreground"} and ok[0]["label"].any()
    listed = Folder2DDataset(root, strict=False)  # verification lists the problem instead
    assert any("dataset.mask_mode" in p for p in listed.problems)


VARIANTS = {  # name: (write_folder2d kwargs, class names expected in val_cases.csv)
    "rgb_image_L255_mask": ({"rgb": True}, {"foreground"}),
    "rgba_mask": ({"mask_style": "RGBA"}, {"foreground"}),
    "16bit_mask": ({"mask_style": "I16"}, {"foreground"}),
    "01_mask": ({"mask_style": "L01"}, {"foreground"}),
    "jpeg_mask": ({"mask_style": "jpeg", "rgb": True}, {"foreground"}),
    "label_ids": ({"multi": True}, {"label_1", "label_2"}),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_folder2d_trains_two_steps(variant, tmp_path):
    kwargs, classes = VARIANTS[variant]
    root = S.write_folder2d(tmp_path / "data", n=6, size=64, **kwargs)
    out = tmp_path / "run"
    run_entry("train_2d", ["dataset=folder2d", f"dataset.root={root}", "model.checkpoint=null"], out)
    rows = read_csv(out / "metrics.csv")
    assert len(rows) == 1 and rows[0]["step"] == "2" and float(rows[0]["train/loss"]) > 0
    cases = read_csv(out / "val_cases.csv")
    assert cases and {r["class_name"] for r in cases} == classes  # the dataset's classes, scored
    # PNG/JPEG files have no spacing: HD95 in pixels, said in each row and in the summary's key
    assert {r["hd95_unit"] for r in cases} == {"px"}
    assert "val/hd95_px" in rows[0] and not [k for k in rows[0] if k.startswith("val/hd95_mm")]
