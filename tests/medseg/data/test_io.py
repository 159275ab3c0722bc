"""Readers and writers: values, geometry and round trips."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from medseg.data.io import Geometry, read_header, read_image, read_label
from medseg.data.writers import write_like
from medseg.errors import DataError
from tests.data_helpers import quirky_affine, save_nifti


@pytest.fixture
def quirky_nii(tmp_path):
    stored = np.random.default_rng(0).integers(0, 500, size=(12, 10, 5)).astype(np.int16)
    path = save_nifti(tmp_path / "ct.nii.gz", stored[..., None], quirky_affine(), slope=2.0, inter=-1024.0)
    return path, stored


def test_nifti_scaling_4d_singleton_and_axes(quirky_nii):
    path, stored = quirky_nii
    arr, geom = read_image(path)
    assert arr.dtype == np.float32 and arr.shape == (5, 10, 12)  # (D,H,W) = (k,j,i)
    np.testing.assert_allclose(arr, stored.transpose(2, 1, 0) * 2.0 - 1024.0)
    np.testing.assert_allclose(geom.spacing, (2.5, 0.8, 0.8), rtol=1e-6)
    np.testing.assert_allclose(geom.affine, quirky_affine())
    assert geom.header is not None


def test_nifti_geometry_agrees_with_simpleitk(quirky_nii):
    path, _ = quirky_nii
    arr, geom = read_image(path)
    ref = sitk.ReadImage(str(path))
    np.testing.assert_allclose(
        arr, sitk.GetArrayFromImage(ref)[..., 0] if ref.GetDimension() == 4 else sitk.GetArrayFromImage(ref)
    )
    np.testing.assert_allclose(geom.origin, ref.GetOrigin()[:3], atol=1e-4)
    np.testing.assert_allclose(
        geom.direction, np.asarray(ref.GetDirection()).reshape(ref.GetDimension(), -1)[:3, :3], atol=1e-5
    )


def test_write_like_nifti_round_trip_keeps_header(quirky_nii, tmp_path):
    path, _ = quirky_nii
    arr, geom = read_image(path)
    out = write_like(arr, geom, tmp_path / "out.nii.gz")
    back, g2 = read_image(out)
    np.testing.assert_array_equal(back, arr)
    np.testing.assert_allclose(g2.affine, geom.affine)
    a, b = nib.load(str(path)), nib.load(str(out))
    assert a.shape == b.shape  # the trailing singleton axis is kept
    np.testing.assert_allclose(a.header.get_qform(), b.header.get_qform())
    np.testing.assert_allclose(a.header.get_sform(), b.header.get_sform())
    assert int(a.header["qform_code"]) == int(b.header["qform_code"])
    assert not list(tmp_path.glob(".*tmp*"))  # no temp file left behind


def test_write_like_label_dtype_and_values(quirky_nii, tmp_path):
    path, _ = quirky_nii
    arr, geom = read_image(path)
    lab = (arr > -500).astype(np.int64) + (arr > 0)
    out = write_like(lab, geom, tmp_path / "seg.nii.gz")
    assert nib.load(str(out)).get_data_dtype() == np.uint8
    back, _ = read_label(out)
    np.testing.assert_array_equal(back, lab)
    big = lab * 300 - 5
    back, _ = read_label(write_like(big, geom, tmp_path / "seg16.nii"))
    assert nib.load(str(tmp_path / "seg16.nii")).get_data_dtype() == np.int16
    np.testing.assert_array_equal(back, big)


@pytest.mark.parametrize("ext", [".mha", ".nrrd"])
def test_itk_round_trip(quirky_nii, tmp_path, ext):
    path, _ = quirky_nii
    arr, geom = read_image(path)
    out = write_like(arr, geom, tmp_path / f"x{ext}")
    back, g2 = read_image(out)
    np.testing.assert_array_equal(back, arr)
    np.testing.assert_allclose(g2.affine, geom.affine, atol=1e-5)
    np.testing.assert_allclose(g2.spacing, geom.spacing, rtol=1e-6)
    assert read_header(out)[0] == arr.shape


def test_write_like_overwrite_flag(tmp_path):
    geom = Geometry.identity("mem")
    p = write_like(np.zeros((2, 3, 4), np.uint8), geom, tmp_path / "a.nii.gz")
    with pytest.raises(FileExistsError, match="a.nii.gz"):
        write_like(np.ones((2, 3, 4), np.uint8), geom, p, overwrite=False)
    write_like(np.ones((2, 3, 4), np.uint8), geom, p)
    assert read_label(p)[0].max() == 1


def test_2d_images(tmp_path):
    grey = np.arange(12 * 20, dtype=np.uint8).reshape(12, 20)
    Image.fromarray(grey).save(tmp_path / "g.png")
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "c.tif")
    arr, geom = read_image(tmp_path / "g.png")
    assert arr.shape == (1, 12, 20) and geom.spacing == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(arr[0], grey)
    arr, _ = read_image(tmp_path / "c.tif")
    assert arr.shape == (1, 12, 20, 3)
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "c.jpg")
    assert read_image(tmp_path / "c.jpg")[0].shape == (1, 12, 20, 3)
    assert read_label(tmp_path / "c.tif")[0].shape == (1, 12, 20)


def test_numpy_files(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((4, 5), np.int16))
    assert read_image(tmp_path / "a.npy")[0].shape == (1, 4, 5)
    np.savez(
        tmp_path / "b.npz",
        imgs=np.zeros((3, 4, 5), np.uint8),
        gts=np.ones((3, 4, 5), np.uint8),
        spacing=np.array([0.5, 0.6, 2.0]),
    )
    img, geom = read_image(tmp_path / "b.npz")
    assert img.shape == (3, 4, 5) and geom.spacing == (2.0, 0.6, 0.5)  # stored (x,y,z) -> (sz,sy,sx)
    assert read_label(tmp_path / "b.npz")[0].max() == 1


def test_dicom_series_folder(tmp_path):
    vol = (np.arange(3 * 6 * 7).reshape(3, 6, 7) % 100).astype(np.int16)
    folder = tmp_path / "dcm"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(3):
        sl = sitk.GetImageFromArray(vol[z])
        sl.SetSpacing((0.7, 0.7))
        for tag, val in {
            "0008|0060": "CT",
            "0020|000d": "1.2.3",
            "0020|000e": "1.2.3.4",
            "0020|0013": str(z + 1),
            "0020|0032": f"0\\0\\{2.0 * z}",
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": "0.7\\0.7",
            "0008|0018": f"1.2.3.4.{z}",
        }.items():
            sl.SetMetaData(tag, val)
        writer.SetFileName(str(folder / f"{z}.dcm"))
        writer.Execute(sl)
    arr, geom = read_image(folder)
    assert arr.shape == (3, 6, 7)
    np.testing.assert_array_equal(arr, vol)
    np.testing.assert_allclose(geom.spacing, (2.0, 0.7, 0.7), rtol=1e-4)


def _dicom_series(folder, vol, positions, orientation="1\\0\\0\\0\\1\\0"):
    """Write ``vol`` (D, H, W) as one DICOM file per slice; slice z at ImagePositionPatient ``positions[z]``."""
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z, pos in enumerate(positions):
        sl = sitk.GetImageFromArray(vol[z])
        sl.SetSpacing((0.7, 0.7))
        for tag, val in {
            "0008|0060": "CT",
            "0020|000d": "1.2.3",
            "0020|000e": "1.2.3.4",
            "0020|0013": str(z + 1),
            "0020|0032": "\\".join(f"{c:g}" for c in pos),
            "0020|0037": orientation,
            "0028|0030": "0.7\\0.7",
            "0008|0018": f"1.2.3.4.{z}",
        }.items():
            sl.SetMetaData(tag, val)
        writer.SetFileName(str(folder / f"{z}.dcm"))
        writer.Execute(sl)
    return folder


def test_dicom_series_with_a_missing_slice_is_refused_naming_the_gap(tmp_path):
    """8 slices 2.5 mm apart, the 4th file deleted: ITK would read 7 slices at 2.9167 mm (the mask would
    be misplaced); the reader refuses with one line naming the folder and the gap."""
    vol = np.zeros((8, 6, 7), np.int16)
    folder = _dicom_series(tmp_path / "dcm", vol, [(0, 0, 2.5 * z) for z in range(8)])
    (folder / "3.dcm").unlink()
    for read in (read_image, read_header):
        with pytest.raises(DataError) as e:
            read(folder)
        msg = str(e.value)
        assert "\n" not in msg and str(folder) in msg, msg
        assert "not evenly spaced" in msg and "gap of 5 mm between slice 3 and 4" in msg, msg
        assert "others 2.5 mm" in msg, msg


def test_dicom_series_evenly_spaced_along_an_oblique_normal_reads(tmp_path):
    vol = (np.arange(4 * 6 * 7).reshape(4, 6, 7) % 100).astype(np.int16)
    c, s = np.cos(0.3), np.sin(0.3)  # rows along x, columns tilted in y-z: normal (0, -s, c)
    orient = f"1\\0\\0\\0\\{c:.6f}\\{s:.6f}"
    folder = _dicom_series(tmp_path / "dcm", vol, [(0, -s * 3.0 * z, c * 3.0 * z) for z in range(4)], orient)
    arr, geom = read_image(folder)
    np.testing.assert_array_equal(arr, vol)
    np.testing.assert_allclose(geom.spacing, (3.0, 0.7, 0.7), rtol=1e-4)


def test_dicom_series_with_gantry_tilt_is_refused(tmp_path):
    """Each slice shifted 1 mm in y per 2.5 mm step along the normal (a 21.8 degree gantry tilt): ITK
    would build an orthogonal grid and lose the shear, misplacing every slice; refused in one line."""
    vol = np.zeros((5, 6, 7), np.int16)
    folder = _dicom_series(tmp_path / "dcm", vol, [(0, 1.0 * z, 2.5 * z) for z in range(5)])
    with pytest.raises(DataError) as e:
        read_image(folder)
    msg = str(e.value)
    assert "\n" not in msg and str(folder) in msg and "gantry tilt" in msg and "21.8" in msg, msg


def test_read_label_rejects_fractions(tmp_path):
    save_nifti(tmp_path / "frac.nii.gz", np.full((3, 3, 3), 0.5, np.float32), np.eye(4), dtype=np.float32)
    with pytest.raises(DataError, match=r"frac\.nii\.gz.*non-integer"):
        read_label(tmp_path / "frac.nii.gz")
