"""The memory-mapped volume cache: same arrays as the files, invalidated by edits, rebuilt when broken,
one clear error when its folder cannot be written."""

from __future__ import annotations

import os

import numpy as np
import pytest

from medseg.data import synthetic
from medseg.data.datasets import build_dataset
from medseg.errors import DataError


def _dataset(root, **kw):
    from omegaconf import OmegaConf

    return build_dataset(
        OmegaConf.create({"_target_": "medseg.data.datasets.NnUNetDataset", "root": str(root), **kw})
    )


@pytest.fixture()
def nn_root(tmp_path):
    return synthetic.write_nnunet(tmp_path / "nn", n_cases=2, depth=6, size=32, n_organs=2, n_test=0)


def test_cached_case_equals_files_and_is_memory_mapped(nn_root, tmp_path):
    plain = _dataset(nn_root)
    cached = _dataset(nn_root)
    cached.enable_cache(tmp_path / "cache")
    cid = plain.case_ids[0]
    ref = plain.load_case(cid)
    first = cached.load_case(cid)  # builds the entry
    again = cached.load_case(cid)  # reads it back
    assert isinstance(again["image"], np.memmap) and isinstance(again["label"], np.memmap)
    for case in (first, again):
        np.testing.assert_array_equal(np.asarray(case["image"]), ref["image"])
        np.testing.assert_array_equal(np.asarray(case["label"]), ref["label"])
        assert case["spacing"] == pytest.approx(ref["spacing"])
        assert case["label_names"] == ref["label_names"]
    np.testing.assert_allclose(again["geometry"].affine, ref["geometry"].affine)
    assert len(list((tmp_path / "cache").iterdir())) == 1


def test_label_remap_and_file_edits_make_new_entries(nn_root, tmp_path):
    ds = _dataset(nn_root)
    ds.enable_cache(tmp_path / "cache")
    remapped = _dataset(nn_root, labels=[2])
    remapped.enable_cache(tmp_path / "cache")
    cid = ds.case_ids[0]
    full, only2 = ds.load_case(cid), remapped.load_case(cid)
    assert set(np.unique(full["label"])) == {0, 1, 2} and set(np.unique(only2["label"])) == {0, 1}
    np.testing.assert_array_equal(np.asarray(only2["label"]) == 1, np.asarray(full["label"]) == 2)
    img_file = ds.case_files(cid)["image"][0]
    st = img_file.stat()
    os.utime(img_file, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the file changed
    ds.load_case(cid)
    assert len(list((tmp_path / "cache").iterdir())) == 3


def test_truncated_entry_is_rebuilt(nn_root, tmp_path):
    ds = _dataset(nn_root)
    ds.enable_cache(tmp_path / "cache")
    cid = ds.case_ids[0]
    ref = np.asarray(ds.load_case(cid)["image"]).copy()
    (entry,) = (tmp_path / "cache").iterdir()
    data = (entry / "image.npy").read_bytes()
    (entry / "image.npy").write_bytes(data[: len(data) // 3])
    np.testing.assert_array_equal(np.asarray(ds.load_case(cid)["image"]), ref)


def test_float16_cache_is_close(nn_root, tmp_path):
    ds = _dataset(nn_root)
    ref = ds.load_case(ds.case_ids[0])["image"]
    ds.enable_cache(tmp_path / "c16", dtype="float16")
    ds.load_case(ds.case_ids[0])
    half = ds.load_case(ds.case_ids[0])["image"]
    assert half.dtype == np.float16
    np.testing.assert_allclose(np.asarray(half, dtype=np.float32), ref, rtol=1e-3, atol=1e-3)
    with pytest.raises(DataError, match=r"data_cache.dtype: expected one of"):
        ds.enable_cache(tmp_path / "c", dtype="int8")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into a read-only folder")
def test_unwritable_cache_folder_is_one_error(nn_root, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(DataError, match=r"ro.*data_cache.dir is not writable"):
        _dataset(nn_root).enable_cache(ro / "cache")


def test_cache_path_that_is_a_file_is_one_error(nn_root, tmp_path):
    f = tmp_path / "file"
    f.write_text("x", encoding="utf-8")
    with pytest.raises(DataError, match=r"file.*data_cache.dir is not writable"):
        _dataset(nn_root).enable_cache(f)
