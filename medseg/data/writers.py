"""Writers with the input's geometry: a (D, H, W) array written as NIfTI (the input's affine and header),
ITK (spacing, origin, direction), PNG/JPEG/TIFF, or ``.npy`` (the array itself), atomically.
Readers are in :mod:`medseg.data.io`."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from medseg.data.io import ITK_EXT, NIFTI_EXT, PIL_EXT, Geometry, stem_of, suffix_of
from medseg.errors import DataError


def _label_dtype(array: np.ndarray) -> np.dtype:
    if array.size and array.min() >= 0 and array.max() <= 255:
        return np.dtype(np.uint8)
    if array.size and (array.min() < -32768 or array.max() > 32767):
        return np.dtype(np.int32)
    return np.dtype(np.int16)


def _write_nifti(array: np.ndarray, geometry: Geometry, path: Path) -> None:
    import nibabel as nib

    data = array.transpose(2, 1, 0) if array.ndim == 3 else array.transpose(2, 1, 0, 3)
    ref = geometry.header
    if ref is not None and hasattr(ref, "get_qform"):
        if len(ref.get_data_shape()) == 4 and ref.get_data_shape()[3] == 1 and data.ndim == 3:
            data = data[..., None]  # keep the reference's trailing singleton axis
        hdr = ref.copy()
        img = nib.Nifti1Image(data, geometry.affine, header=hdr)
        img.header.set_qform(ref.get_qform(), int(ref["qform_code"]))
        img.header.set_sform(ref.get_sform(), int(ref["sform_code"]))
    else:
        img = nib.Nifti1Image(data, geometry.affine)
        img.header.set_qform(geometry.affine, 1)
        img.header.set_sform(geometry.affine, 1)
    img.set_data_dtype(data.dtype)
    img.header.set_slope_inter(1.0, 0.0)
    nib.save(img, str(path))


def _write_itk(array: np.ndarray, geometry: Geometry, path: Path) -> None:
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(array, isVector=array.ndim == 4)
    sz, sy, sx = geometry.spacing
    img.SetSpacing((float(sx), float(sy), float(sz)))
    img.SetOrigin(tuple(float(v) for v in np.asarray(geometry.origin).ravel()))
    img.SetDirection(tuple(float(v) for v in np.asarray(geometry.direction).ravel()))
    sitk.WriteImage(img, str(path), True)


def _write_pil(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    if array.shape[0] != 1:
        raise DataError(f"{path}: 2D formats need D == 1, got shape {array.shape}")
    Image.fromarray(np.asarray(array[0]).astype(np.uint8)).save(
        path, format=Image.registered_extensions()[suffix_of(path)]
    )


def write_like(
    array_dhw: np.ndarray, geometry: Geometry, path: str | Path, *, overwrite: bool = True
) -> Path:
    """Write ``array_dhw`` with the geometry of a file read earlier; atomic (temp file + os.replace).

    NIfTI (``.nii``/``.nii.gz``) keeps the reference header's shape, affine, qform and sform; data is
    ``array.transpose(2, 1, 0)``. Integer arrays are written as uint8 (0..255) or int16, float arrays as
    float32, always with scl_slope 1 / inter 0. ``.mha``/``.nrrd`` carry spacing/origin/direction.
    ``.npy`` and PNG/TIFF (D == 1, uint8) are supported for convenience.

    Args:
        array_dhw: (D, H, W) array (or (D, H, W, 3)).
        geometry: from :func:`read_image` / :func:`read_label` of the reference file.
        path: output file; its extension picks the format.
        overwrite: if False and ``path`` exists, raise FileExistsError.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: exists and overwrite=False")
    array = np.asarray(array_dhw)
    if array.ndim not in (3, 4):
        raise DataError(f"{path}: write_like needs a (D,H,W) array, got shape {array.shape}")
    if array.dtype.kind in "iub":
        array = array.astype(_label_dtype(array))
    elif array.dtype.kind == "f":
        array = array.astype(np.float32)
    suf = suffix_of(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{stem_of(path)}.", suffix=f".tmp{suf}", dir=path.parent)
    os.close(fd)
    try:
        if suf in NIFTI_EXT:
            _write_nifti(array, geometry, Path(tmp))
        elif suf in ITK_EXT:
            _write_itk(array, geometry, Path(tmp))
        elif suf == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, array)
        elif suf in PIL_EXT:
            _write_pil(array, Path(tmp))
        else:
            raise DataError(f"{path}: cannot write file type '{suf}'")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
