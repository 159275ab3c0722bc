"""Readers and writers: every image comes back as ``(array, Geometry)``.

Axis convention (docs/DESIGN.md): arrays are (D, H, W) = (z, y, x), SimpleITK's ``GetArrayFromImage``
order; colour images are (D, H, W, 3); 2D images have D == 1 and spacing (1, 1, 1). NIfTI files are
read with nibabel and transposed ``(2, 1, 0)``; nothing is ever resampled or reoriented, so the slice
axis is the file's third voxel axis (k).

Supported: ``.nii``/``.nii.gz`` (nibabel: scl_slope/inter applied, trailing singleton 4th axis dropped),
``.mha``/``.mhd``/``.nrrd`` (SimpleITK), DICOM series folders, ``.png``/``.jpg``/``.jpeg``/``.tif``/
``.tiff``/``.bmp`` (PIL), ``.npy``/``.npz``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import DataError

NIFTI_EXT = (".nii.gz", ".nii")
ITK_EXT = (".mha", ".mhd", ".nrrd", ".nhdr")
PIL_EXT = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
NUMPY_EXT = (".npy", ".npz")
IMAGE_EXT = NIFTI_EXT + ITK_EXT + PIL_EXT + NUMPY_EXT
_LPS = np.diag([-1.0, -1.0, 1.0])  # RAS <-> LPS flip of x and y
_NPZ_IMAGE_KEYS = ("imgs", "image", "img", "data", "arr_0")
_NPZ_LABEL_KEYS = ("gts", "label", "seg", "mask", "arr_0")


@dataclass
class Geometry:
    """Where the voxels of a (D, H, W) array lie.

    Attributes:
        spacing: (sz, sy, sx) in mm.
        origin: (3,) physical position of voxel (0, 0, 0), ITK/LPS (x, y, z).
        direction: (3, 3) ITK/LPS direction cosines; column c is voxel axis c (i=x, j=y, k=z).
        affine: (4, 4) nibabel RAS affine of voxel (i, j, k) = (x, y, z) index.
        source: the file or folder read.
        header: the NIfTI header (nibabel) when read from NIfTI, else None.
        spacing_known: the spacing is physical (mm, from a header or an npz ``spacing``); False for
            PNG/JPEG/``.npy``/BTCV slices, whose (1, 1, 1) is one voxel (HD95 then in voxels/pixels).
        oriented: origin and direction come from an image header (NIfTI, ITK, DICOM), so a prediction
            can be written as an image that overlays the input.
    """

    spacing: tuple[float, float, float]
    origin: np.ndarray
    direction: np.ndarray
    affine: np.ndarray
    source: str
    header: Any = None
    spacing_known: bool = True
    oriented: bool = True

    @classmethod
    def identity(cls, source: str | Path, spacing: tuple[float, float, float] | None = None) -> Geometry:
        """Axis-aligned geometry, origin 0, not oriented; ``spacing`` (sz, sy, sx) in mm, or None (unknown:
        one voxel = 1)."""
        sz, sy, sx = (float(s) for s in (spacing if spacing is not None else (1.0, 1.0, 1.0)))
        aff = _affine_from_itk((sx, sy, sz), np.zeros(3), np.eye(3))
        return cls((sz, sy, sx), np.zeros(3), np.eye(3), aff, str(source), None, spacing is not None, False)


def suffix_of(path: str | Path) -> str:
    """Lower-case extension, ``.nii.gz`` counted as one."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def stem_of(path: str | Path) -> str:
    """File name without its (possibly double) extension."""
    name = Path(path).name
    suf = suffix_of(path)
    return name[: len(name) - len(suf)] if suf else name


def _affine_from_itk(spacing_xyz, origin, direction) -> np.ndarray:
    aff = np.eye(4)
    aff[:3, :3] = _LPS @ np.asarray(direction, float).reshape(3, 3) @ np.diag(spacing_xyz)
    aff[:3, 3] = _LPS @ np.asarray(origin, float)
    return aff


def _geometry_from_affine(affine: np.ndarray, source: str, header: Any = None) -> Geometry:
    affine = np.asarray(affine, float)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    zooms = np.where(zooms > 0, zooms, 1.0)
    direction = _LPS @ affine[:3, :3] / zooms
    origin = _LPS @ affine[:3, 3]
    return Geometry(
        (float(zooms[2]), float(zooms[1]), float(zooms[0])), origin, direction, affine, source, header
    )


# ----------------------------------------------------------------------------------------------- readers
def _read_nifti(path: Path, channel: int | None, header_only: bool = False):
    import nibabel as nib

    try:
        img = nib.load(str(path))
    except Exception as exc:  # noqa: BLE001 - nibabel raises many kinds
        raise DataError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc
    shape = img.shape
    if len(shape) == 4 and shape[3] != 1 and channel is None:
        raise DataError(f"{path}: 4D image with {shape[3]} channels; choose one with dataset.channel")
    if len(shape) > 4 or len(shape) < 2:
        raise DataError(f"{path}: unsupported NIfTI shape {shape}")
    geom = _geometry_from_affine(img.affine, str(path), img.header)
    if header_only:
        sp = tuple(shape[:3]) if len(shape) >= 3 else (*shape, 1)
        return np.empty(0), geom, (sp[2], sp[1], sp[0])
    try:
        data = np.asanyarray(img.dataobj)  # applies scl_slope / scl_inter
    except Exception as exc:  # noqa: BLE001 - truncated gzip, short file, ...
        raise DataError(
            f"{path}: cannot read NIfTI data, file truncated or corrupt ({type(exc).__name__}: {exc})"
        ) from exc
    if data.ndim == 4:
        data = data[..., channel if channel is not None else 0]
    if data.ndim == 2:
        data = data[:, :, None]
    return np.ascontiguousarray(data.transpose(2, 1, 0)), geom, data.shape[::-1]


SLICE_GAP_ATOL, SLICE_GAP_RTOL = 1e-3, 1e-3  # mm, fraction of the typical gap; ITK only warns at 1e-4 rel.


def _check_slice_positions(folder: Path, files: list[str] | tuple[str, ...]) -> None:
    """Refuse a DICOM series whose slices are not evenly spaced along the slice normal.

    ITK's series reader takes one spacing for the whole volume (first to last position / (n - 1)) and
    only warns when a slice is missing, so 7 of 8 slices at 2.5 mm become 7 slices at 2.9167 mm and a
    written mask lies beside the anatomy. Positions are ``ImagePositionPatient`` projected on the normal
    ``row x column`` of ``ImageOrientationPatient``, in GDCM's sorted order. A gap that differs from the
    typical one by more than ``SLICE_GAP_ATOL + SLICE_GAP_RTOL * gap`` (DICOM positions are decimal
    strings rounded to ~1e-3 mm) is one error naming the folder, the slices and the gap; so is a gantry
    tilt (slices shifted within their plane from one to the next: a sheared grid that ITK's orthogonal
    image cannot hold). Series without these tags (secondary captures) are left to ITK.
    """
    import SimpleITK as sitk

    if len(files) < 3:
        return
    positions, orientation = [], None
    for f in files:
        r = sitk.ImageFileReader()
        r.SetFileName(str(f))
        r.LoadPrivateTagsOff()
        r.ReadImageInformation()
        if not (r.HasMetaDataKey("0020|0032") and r.HasMetaDataKey("0020|0037")):
            return
        try:
            positions.append([float(v) for v in r.GetMetaData("0020|0032").split("\\")])
            orientation = orientation or [float(v) for v in r.GetMetaData("0020|0037").split("\\")]
        except ValueError:
            return
    if len(orientation) != 6 or any(len(p) != 3 for p in positions):
        return
    normal = np.cross(orientation[:3], orientation[3:])
    if np.linalg.norm(normal) == 0:
        return
    z = np.asarray(positions) @ (normal / np.linalg.norm(normal))
    gaps = np.abs(np.diff(z))
    typical = float(np.median(gaps))
    bad = np.flatnonzero(np.abs(gaps - typical) > SLICE_GAP_ATOL + SLICE_GAP_RTOL * typical)
    if bad.size == 0:
        steps = np.diff(np.asarray(positions), axis=0)  # a gantry tilt shifts slices within their plane
        along = steps @ (normal / np.linalg.norm(normal))
        inplane = np.linalg.norm(steps - along[:, None] * normal / np.linalg.norm(normal), axis=1)
        i = int(np.argmax(inplane))
        if inplane[i] > SLICE_GAP_ATOL + SLICE_GAP_RTOL * typical:
            tilt = float(np.degrees(np.arctan2(inplane[i], abs(along[i]))))
            raise DataError(
                f"{folder}: slices are sheared (gantry tilt of {tilt:.1f} degrees: each slice shifts "
                f"{inplane[i]:.4g} mm within its plane per {abs(along[i]):.4g} mm step); an orthogonal grid "
                "would misplace them: resample the series to an orthogonal grid first (e.g. dcm2niix's "
                "tilt correction)"
            )
        return
    i = int(bad[0])
    good = np.delete(gaps, bad)
    others = float(np.median(good)) if good.size else typical
    raise DataError(
        f"{folder}: slices are not evenly spaced: gap of {gaps[i]:.4g} mm between slice {i + 1} and "
        f"{i + 2} ({Path(files[i]).name}, {Path(files[i + 1]).name}; others {others:.4g} mm)"
        + (f" and {bad.size - 1} more uneven gap(s)" if bad.size > 1 else "")
        + "; a slice is missing or the series mixes acquisitions: complete the series or resample it "
        "to even spacing first"
    )


def _read_itk(path: Path, header_only: bool = False):
    import SimpleITK as sitk

    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            ids = reader.GetGDCMSeriesIDs(str(path))
            if not ids:
                raise DataError(f"{path}: folder holds no DICOM series")
            files = max((reader.GetGDCMSeriesFileNames(str(path), i) for i in ids), key=len)
            _check_slice_positions(path, files)
            reader.SetFileNames(files)
            img = reader.Execute()
        elif header_only:
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            img = reader
        else:
            img = sitk.ReadImage(str(path))
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: not readable by SimpleITK ({str(exc).strip().splitlines()[-1]})") from exc
    dim = img.GetDimension()
    if dim not in (2, 3):
        raise DataError(f"{path}: unsupported {dim}D image")
    spacing = list(img.GetSpacing()) + [1.0] * (3 - dim)
    origin = list(img.GetOrigin()) + [0.0] * (3 - dim)
    direction = np.eye(3)
    direction[:dim, :dim] = np.asarray(img.GetDirection(), float).reshape(dim, dim)
    aff = _affine_from_itk(spacing, origin, direction)
    geom = Geometry(
        (spacing[2], spacing[1], spacing[0]), np.asarray(origin, float), direction, aff, str(path)
    )
    size = list(img.GetSize()) + [1] * (3 - dim)
    shape = (size[2], size[1], size[0])
    if header_only:
        return np.empty(0), geom, shape
    arr = sitk.GetArrayFromImage(img)
    if dim == 2:
        arr = arr[None]
    return arr, geom, shape


def _read_pil(path: Path, header_only: bool = False, grey: bool = False):
    from PIL import Image, ImageSequence

    try:
        with Image.open(path) as im:
            shape = (getattr(im, "n_frames", 1), im.size[1], im.size[0])
            if header_only:
                return np.empty(0), Geometry.identity(path), shape
            frames = []
            for frame in ImageSequence.Iterator(im):
                if frame.mode == "P" and grey:
                    pass  # palette label map: the indices are the ids
                elif frame.mode in ("1", "L"):
                    frame = frame.convert("L")
                elif frame.mode.startswith("I") or frame.mode == "F":
                    pass
                else:  # RGB(A), LA, CMYK...: alpha dropped; labels go grey in _grey_label
                    frame = frame.convert("RGB")
                frames.append(np.asarray(frame))
    except Exception as exc:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError...
        raise DataError(
            f"{path}: not a readable image, truncated or corrupt ({type(exc).__name__}: {exc})"
        ) from exc
    arr = np.stack(frames)
    return arr, Geometry.identity(path), shape  # colour labels go grey in read_label


def _grey_label(arr: np.ndarray, path: Path | str = "", distinct_colours: bool = False) -> np.ndarray:
    """Colour label (..., C) -> (...): a 4th (alpha) channel is ignored; equal channels give their value,
    unequal ones the brightest (a coloured object on black stays an object; JPEG channel noise is small).

    ``distinct_colours`` (the values will be read as class ids): colours that the brightest channel
    would merge (red and green objects both 255) are one error naming the file, not a silent merge.
    """
    rgb = arr[..., :3]
    if (rgb == rgb[..., :1]).all():
        return rgb[..., 0]
    grey = rgb.max(axis=-1)
    if distinct_colours:
        c = rgb[grey > 0].astype(np.int64)  # non-black pixels: (N, 3)
        peak = c.max(axis=1)
        hue = (c * 2 >= peak[:, None]) @ np.array([4, 2, 1])  # which channels are strong: red, yellow, ...
        pairs = np.unique(peak << 3 | hue)
        if len(pairs) > len(np.unique(pairs >> 3)):  # one grey value, two hues: two classes would merge
            names = {4: "red", 2: "green", 1: "blue", 6: "yellow", 5: "magenta", 3: "cyan", 7: "white"}
            seen = sorted({names[int(h)] for h in pairs & 7})
            raise DataError(
                f"{path}: colour-coded label map ({', '.join(seen)}) whose classes would merge as grey "
                "values: save one grey value (id) per class, or set dataset.mask_mode=binary "
                "(every colour = object)"
            )
    return grey


def _read_numpy(path: Path, keys: tuple[str, ...], header_only: bool = False):
    try:
        if suffix_of(path) == ".npy":
            arr = np.load(path, mmap_mode="r" if header_only else None, allow_pickle=False)
            spacing = None
        else:
            with np.load(path, allow_pickle=False) as z:
                key = next((k for k in keys if k in z.files), None)
                if key is None:
                    raise DataError(f"{path}: npz has none of the keys {list(keys)} (found {z.files})")
                arr = z[key]
                spacing = tuple(float(s) for s in z["spacing"])[::-1] if "spacing" in z.files else None
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: not a readable numpy file ({type(exc).__name__}: {exc})") from exc
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[-1] not in (3, 4)):
        raise DataError(f"{path}: expected (H,W), (D,H,W) or (D,H,W,3) array, got shape {arr.shape}")
    if spacing is not None and len(spacing) != 3:
        raise DataError(f"{path}: 'spacing' must hold 3 values, got {spacing}")
    return arr, Geometry.identity(path, spacing), arr.shape[:3]


def _read_any(
    path: str | Path, *, channel: int | None = None, header_only: bool = False, label: bool = False
):
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    suf = suffix_of(path)
    if path.is_dir():
        return _read_itk(path, header_only)
    if suf in NIFTI_EXT:
        return _read_nifti(path, channel, header_only)
    if suf in ITK_EXT or suf == ".dcm":
        return _read_itk(path, header_only)
    if suf in PIL_EXT:
        return _read_pil(path, header_only, grey=label)
    if suf in NUMPY_EXT:
        return _read_numpy(path, _NPZ_LABEL_KEYS if label else _NPZ_IMAGE_KEYS, header_only)
    raise DataError(
        f"{path}: unsupported file type '{suf}' (supported: {', '.join(IMAGE_EXT)}, DICOM folder)"
    )


def read_image(path: str | Path, *, channel: int | None = None) -> tuple[np.ndarray, Geometry]:
    """Read an image.

    Args:
        path: file, or a folder holding one DICOM series.
        channel: for 4D NIfTI with several channels (MSD style), which one to take.

    Returns:
        float32 array (D, H, W) or (D, H, W, 3) for colour 2D images (D == 1), and its Geometry.
    """
    arr, geom, _ = _read_any(path, channel=channel)
    if arr.ndim == 4 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    return np.asarray(arr, dtype=np.float32), geom


def read_label(path: str | Path, *, distinct_colours: bool = False) -> tuple[np.ndarray, Geometry]:
    """Read a label map as int64 (D, H, W); colour files go grey (alpha ignored; equal channels -> their
    value, else the brightest channel; with ``distinct_colours`` a colour-coded class map whose colours
    would merge is an error, see :func:`_grey_label`).

    Raises:
        DataError: if the file holds NaN/inf or non-integer values.
    """
    arr, geom, _ = _read_any(path, label=True)
    if arr.ndim == 4:
        arr = _grey_label(arr, path, distinct_colours)
    arr = np.asarray(arr)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise DataError(f"{path}: label holds NaN or inf values")
        frac = arr != np.round(arr)
        if frac.any():
            raise DataError(
                f"{path}: label holds non-integer values (e.g. {arr[frac].flat[0]!r}); "
                "labels must be integer ids"
            )
        arr = np.round(arr)
    elif arr.dtype.kind not in "iub":
        raise DataError(f"{path}: label has unsupported dtype {arr.dtype}")
    return arr.astype(np.int64), geom


def read_header(path: str | Path, *, channel: int | None = None) -> tuple[tuple[int, int, int], Geometry]:
    """Shape (D, H, W) and Geometry without reading the voxels (cheap, for verification)."""
    _, geom, shape = _read_any(path, channel=channel, header_only=True)
    return tuple(int(s) for s in shape), geom


def geometry_mismatch(a: Geometry, b: Geometry, rtol: float = 1e-3) -> str | None:
    """Describe how two geometries differ (spacing, origin, direction beyond ``rtol``), or None."""
    for name in ("spacing", "origin", "direction"):
        va, vb = np.asarray(getattr(a, name), float), np.asarray(getattr(b, name), float)
        if not np.allclose(va, vb, rtol=rtol, atol=rtol):
            return f"{name} differs: {np.round(va, 4).tolist()} vs {np.round(vb, 4).tolist()}"
    return None


# ----------------------------------------------------------------------------------------------- writers
