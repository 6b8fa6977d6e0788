"""Image reader: a DICOM, NIfTI, PNG, JPEG or NumPy file in, a ``(1, H, W)`` or ``(1, D, H, W)``
float32 array with intensities in ``[0, 1]`` out.

Every format checks the image size from its header before decoding any pixels, so a file that claims
an absurd size (a decompression bomb, a corrupt header) is refused cheaply.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import prod
from pathlib import Path

import numpy as np

from encoders.readers.errors import ReaderError
from encoders.readers.sniff import EXTENSIONS, file_extension, sniff_file

# Robust intensity range: a few hot or dead pixels must not squash the rest of the image.
_LOW_PERCENTILE = 0.5
_HIGH_PERCENTILE = 99.5
_PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601, as Pillow's convert("L")
_PILLOW_FULL_SCALE = {"L": 255, "I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I": 65535}


@dataclass(frozen=True)
class _Limits:
    """Size limits checked against the header before any pixel is decoded."""

    max_pixels: int
    max_side: int

    def check(self, path: Path, shape: tuple[int, ...]) -> None:
        """Raise :class:`ReaderError` unless ``shape`` (H, W) or (D, H, W) is within the limits."""
        if any(side < 1 for side in shape):
            raise _expected(path, f"an image with pixels, but its header gives the size {shape}")
        if max(shape) > self.max_side or prod(shape) > self.max_pixels:
            raise _expected(
                path,
                f"an image of at most {self.max_pixels:,} pixels and {self.max_side:,} per side, "
                f"but its header gives the size {shape} (corrupt header or decompression bomb?)",
            )


def read_image(path: str | Path, *, max_pixels: int = 50_000_000, max_side: int = 16_384) -> np.ndarray:
    """Read a medical or plain image and scale its intensities to ``[0, 1]``.

    Scaling per format: DICOM applies the modality LUT (RescaleSlope/Intercept), then the first
    WindowCenter/WindowWidth (DICOM linear window) when present, else the 0.5/99.5 percentiles;
    MONOCHROME1 is inverted, colour is turned into luma over the stored bit depth. NIfTI uses the
    0.5/99.5 percentiles. PNG/JPEG divide by the full scale of their bit depth (8 or 16 bits kept).
    NPY uses plain min-max (a constant image gives zeros).

    Axes: a multi-frame DICOM gives D = frames. A NIfTI's voxel axes (i, j, k) are reversed to
    (k, j, i), so D is the third voxel axis (the slice axis of an axial acquisition), H is j and W
    is i; singleton axes are dropped first and no reorientation to RAS is done. A 3-D NPY keeps its
    axes as (D, H, W).

    Args:
        path: ``.dcm``, ``.nii``, ``.nii.gz``, ``.png``, ``.jpg``, ``.jpeg`` or ``.npy`` file.
        max_pixels: refuse images whose header claims more pixels (voxels) than this.
        max_side: refuse images whose header claims a side longer than this.

    Returns:
        float32 array ``(1, H, W)`` for 2-D images or ``(1, D, H, W)`` for volumes, values in
        ``[0, 1]``.

    Raises:
        ReaderError: the file is missing, of an unknown extension, corrupt, too large, or not a
            2-D/3-D image.
    """
    path = Path(path)
    ext = file_extension(path)
    reader = _READERS.get(ext)
    if reader is None:
        accepted = ", ".join(EXTENSIONS["image"])
        raise ReaderError(path, f"unsupported image extension {ext or '(none)'!r}; accepted: {accepted}")
    problem = sniff_file(path, "image")
    if problem:
        raise _expected(path, problem)
    image = reader(path, _Limits(max_pixels, max_side))
    if image.ndim not in (2, 3):
        raise _expected(path, f"a 2-D or 3-D image, but it has {image.ndim} dimensions")
    return np.ascontiguousarray(image[np.newaxis], dtype=np.float32)


def _read_dicom(path: Path, limits: _Limits) -> np.ndarray:
    import pydicom

    try:
        dataset = pydicom.dcmread(path)
    # pydicom raises many exception types on malformed input; each means the same thing here.
    except Exception as error:
        raise _expected(path, f"a readable DICOM file ({_why(error)})") from error
    if not any(keyword in dataset for keyword in _PIXEL_DATA_KEYWORDS):
        raise _expected(
            path, "a DICOM image, but it has no pixel data (a non-image object or a truncated file)"
        )
    try:
        rows, columns = int(dataset.Rows), int(dataset.Columns)
        frames = int(dataset.get("NumberOfFrames") or 1)
    except (AttributeError, TypeError, ValueError) as error:
        raise _expected(path, f"a DICOM image header with a valid size ({_why(error)})") from error
    limits.check(path, (frames, rows, columns) if frames > 1 else (rows, columns))
    try:
        pixels = dataset.pixel_array  # (H, W), (F, H, W), (H, W, 3) or (F, H, W, 3)
        palette = str(dataset.get("PhotometricInterpretation", "")).upper() == "PALETTE COLOR"
        colour = palette or pixels.ndim == (4 if frames > 1 else 3)
        return _dicom_colour(dataset, pixels) if colour else _dicom_grey(path, dataset, pixels)
    except ReaderError:
        raise
    except Exception as error:
        syntax = dataset.file_meta.get("TransferSyntaxUID", "unknown transfer syntax")
        reason = f"{getattr(syntax, 'name', syntax)}: {_why(error)}"
        raise _expected(path, f"DICOM pixel data that can be decoded ({reason})") from error


def _dicom_grey(path: Path, dataset, pixels: np.ndarray) -> np.ndarray:
    """Modality LUT, then the first linear window or robust percentiles; MONOCHROME1 inverted."""
    from pydicom.pixels import apply_modality_lut

    values = np.asarray(apply_modality_lut(pixels, dataset), dtype=np.float64)
    _require_finite(path, values)
    window = _first_window(dataset)
    scaled = _apply_window(values, *window) if window else _scale(values)
    photometric = str(dataset.get("PhotometricInterpretation", "")).upper()
    return 1.0 - scaled if photometric == "MONOCHROME1" else scaled


def _dicom_colour(dataset, pixels: np.ndarray) -> np.ndarray:
    """Luma over the full scale of the stored values (pydicom has already turned YBR into RGB)."""
    if str(dataset.get("PhotometricInterpretation", "")).upper() == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        pixels = apply_color_lut(pixels, dataset)
        full_scale = np.iinfo(pixels.dtype).max
    else:
        full_scale = 2 ** int(dataset.get("BitsStored") or pixels.dtype.itemsize * 8) - 1
    luma = pixels[..., :3].astype(np.float64) @ _LUMA
    return np.clip(luma / full_scale, 0.0, 1.0)


def _first_window(dataset) -> tuple[float, float] | None:
    """The first (center, width) pair, or ``None`` when absent or not a valid linear window."""
    try:
        center, width = (_first(dataset.get(key)) for key in ("WindowCenter", "WindowWidth"))
        if center is None or width is None:
            return None
        center, width = float(center), float(width)
    except (TypeError, ValueError, IndexError):
        return None
    return (center, width) if width >= 1 else None


def _first(value):
    """The first of a multi-valued DICOM element, or the value itself."""
    return value[0] if isinstance(value, Sequence) and not isinstance(value, str) else value


def _apply_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 linear window onto ``[0, 1]`` (width >= 1)."""
    return np.clip((values - (center - 0.5)) / max(width - 1.0, 1e-6) + 0.5, 0.0, 1.0)


def _read_nifti(path: Path, limits: _Limits) -> np.ndarray:
    import nibabel

    try:
        image = nibabel.load(path)
        shape = tuple(int(side) for side in image.shape)  # type: ignore[attr-defined]
    except Exception as error:  # nibabel, like pydicom, has no single error type for bad headers
        raise _expected(path, f"a readable NIfTI header ({_why(error)})") from error
    squeezed = tuple(side for side in shape if side != 1)
    if len(squeezed) not in (2, 3):
        raise _expected(
            path,
            f"a 2-D or 3-D NIfTI image, but its shape is {shape} "
            f"({len(squeezed)}-D once singleton axes are dropped)",
        )
    limits.check(path, squeezed)
    try:
        data = image.get_fdata(dtype=np.float32)  # type: ignore[attr-defined]
    except Exception as error:
        raise _expected(path, f"NIfTI voxel data that can be read ({_why(error)})") from error
    values = data.reshape(squeezed).transpose()
    _require_finite(path, values)
    return _scale(values)


def _read_pillow(path: Path, limits: _Limits) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                limits.check(path, (height, width))
                if image.mode not in _PILLOW_FULL_SCALE:
                    image = image.convert("L")  # type: ignore[assignment]
                full_scale = _PILLOW_FULL_SCALE[image.mode]
                pixels = np.asarray(image)
    except ReaderError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise _expected(path, f"an image of a safe size, but Pillow refused it ({error})") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise _expected(path, f"a readable PNG or JPEG image ({_why(error)})") from error
    return np.clip(pixels.astype(np.float64) / full_scale, 0.0, 1.0)


def _read_npy(path: Path, limits: _Limits) -> np.ndarray:
    try:
        # Memory-mapping reads only the header, so the size is checked before the data is loaded.
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise _expected(
            path, f"a readable .npy array; pickled objects are refused ({_why(error)})"
        ) from error
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        kind = getattr(getattr(array, "dtype", None), "name", type(array).__name__)
        raise _expected(path, f"a .npy array of real numbers, but its dtype is {kind}")
    if array.ndim not in (2, 3):
        raise _expected(path, f"a 2-D or 3-D .npy array, but its shape is {array.shape}")
    limits.check(path, tuple(array.shape))
    values = np.array(array, dtype=np.float64)
    del array  # closes the memory map
    _require_finite(path, values)
    return _scale(values, 0.0, 100.0)


def _scale(values: np.ndarray, low: float = _LOW_PERCENTILE, high: float = _HIGH_PERCENTILE) -> np.ndarray:
    """Map the ``low``..``high`` percentile range onto ``[0, 1]``, clipping outside it.

    Falls back to plain min-max when the percentiles coincide, and gives zeros for a constant image.
    """
    lower, upper = np.percentile(values, [low, high])
    if upper <= lower:
        lower, upper = values.min(), values.max()
    if upper <= lower:
        return np.zeros_like(values)
    return np.clip((values - lower) / (upper - lower), 0.0, 1.0)


def _require_finite(path: Path, values: np.ndarray) -> None:
    if not np.isfinite(values).all():
        raise _expected(path, "an image of finite values, but it contains NaN or infinity")


def _expected(path: Path, what: str) -> ReaderError:
    """The error for a file that is not ``what`` was expected (a phrase without file content)."""
    return ReaderError(path, f"expected {what}")


def _why(error: BaseException) -> str:
    """The error's type and message, on one line and short; library messages name formats and
    sizes, not patient data."""
    message = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return f"{type(error).__name__}: {message[:300]}" if message else type(error).__name__


_READERS: dict[str, Callable[[Path, _Limits], np.ndarray]] = {
    ".dcm": _read_dicom,
    ".nii": _read_nifti,
    ".nii.gz": _read_nifti,
    ".png": _read_pillow,
    ".jpg": _read_pillow,
    ".jpeg": _read_pillow,
    ".npy": _read_npy,
}
