"""read_image on real files: pydicom's bundled DICOMs, PneumoniaMNIST X-rays written as PNG/JPEG,
NIfTI volumes written with nibabel, and broken files built in tmp_path."""

from __future__ import annotations

import re
import struct
import warnings
import zlib
from pathlib import Path

import nibabel
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from encoders.readers.errors import ReaderError
from encoders.readers.image_files import read_image
from encoders.readers.sniff import EXTENSIONS
from tests.conftest import shared_file

LUMA = np.array([0.299, 0.587, 0.114])


def dicom_path(name: str) -> Path:
    """A DICOM file bundled in pydicom's wheel (never downloaded)."""
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom test file {name} is not bundled")
    return Path(path)


def dicom(name: str) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(dicom_path(name))


def percentile_scaled(values: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    lower, upper = np.percentile(values, [low, high])
    return np.clip((values - lower) / (upper - lower), 0, 1)


def pneumonia_images(count: int) -> np.ndarray:
    with np.load(shared_file("medmnist", "pneumoniamnist.npz")) as archive:
        return archive["train_images"][:count]


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR claims ``width`` x ``height`` with one tiny IDAT: a decompression bomb."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat))
    return path


# --- DICOM -----------------------------------------------------------------------------------


def test_ct_small_is_rescaled_then_scaled_by_robust_percentiles():
    dataset = dicom("CT_small.dcm")
    hounsfield = dataset.pixel_array * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept)

    image = read_image(dicom_path("CT_small.dcm"))

    assert image.shape == (1, 128, 128) and image.dtype == np.float32
    np.testing.assert_allclose(image[0], percentile_scaled(hounsfield), atol=1e-6)


def test_window_is_applied_to_rescaled_values(tmp_path):
    # CT_small (intercept -1024) given a soft-tissue window: without the rescale the window
    # would fall on the wrong values.
    dataset = dicom("CT_small.dcm")
    dataset.WindowCenter, dataset.WindowWidth = 40, 400
    dataset.save_as(tmp_path / "ct_window.dcm")
    hounsfield = dataset.pixel_array * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept)

    image = read_image(tmp_path / "ct_window.dcm")

    expected = np.clip((hounsfield - 39.5) / 399 + 0.5, 0, 1)
    np.testing.assert_allclose(image[0], expected, atol=1e-6)
    assert 0.05 < ((image > 0) & (image < 1)).mean() < 0.95  # the window really cuts


def test_mr_small_uses_its_first_window():
    dataset = dicom("MR_small.dcm")
    center, width = float(dataset.WindowCenter), float(dataset.WindowWidth)

    image = read_image(dicom_path("MR_small.dcm"))

    expected = np.clip((dataset.pixel_array - (center - 0.5)) / (width - 1) + 0.5, 0, 1)
    np.testing.assert_allclose(image[0], expected, atol=1e-6)


def test_monochrome1_is_inverted(tmp_path):
    dataset = dicom("CT_small.dcm")
    dataset.PhotometricInterpretation = "MONOCHROME1"
    dataset.save_as(tmp_path / "mono1.dcm")

    inverted = read_image(tmp_path / "mono1.dcm")

    np.testing.assert_allclose(inverted, 1 - read_image(dicom_path("CT_small.dcm")), atol=1e-6)


def test_multi_frame_dicom_becomes_a_volume():
    dataset = dicom("rtdose.dcm")  # 15 frames of 10 x 10

    volume = read_image(dicom_path("rtdose.dcm"))

    assert volume.shape == (1, 15, 10, 10)
    np.testing.assert_allclose(volume[0], percentile_scaled(dataset.pixel_array), atol=1e-6)


def test_rgb_dicom_becomes_luma_grey():
    dataset = dicom("SC_rgb_small_odd.dcm")

    image = read_image(dicom_path("SC_rgb_small_odd.dcm"))

    assert image.shape == (1, 3, 3)
    np.testing.assert_allclose(image[0], dataset.pixel_array @ LUMA / 255, atol=1e-6)
    assert read_image(dicom_path("SC_rgb_rle_2frame.dcm")).shape == (1, 2, 100, 100)


def test_dicom_size_is_checked_from_the_header_before_decoding(tmp_path):
    with pytest.raises(ReaderError, match=r"at most 100 pixels.*\(128, 128\)"):
        read_image(dicom_path("CT_small.dcm"), max_pixels=100)
    dataset = dicom("CT_small.dcm")
    dataset.Rows = 60_000  # the pixel data would fail to decode; the header check comes first
    dataset.save_as(tmp_path / "absurd.dcm")
    with pytest.raises(ReaderError, match=r"header gives the size \(60000, 128\)"):
        read_image(tmp_path / "absurd.dcm")


def test_truncated_dicom_is_refused_with_the_reason(tmp_path):
    content = dicom_path("CT_small.dcm").read_bytes()
    (tmp_path / "half.dcm").write_bytes(content[: len(content) // 2])

    with pytest.raises(ReaderError, match=r"pixel data.*less than expected") as caught:
        read_image(tmp_path / "half.dcm")
    assert caught.value.path == str(tmp_path / "half.dcm")


def test_png_renamed_dcm_and_dicom_without_pixels_are_refused(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "x.png")
    (tmp_path / "x.dcm").write_bytes((tmp_path / "x.png").read_bytes())

    with pytest.raises(ReaderError, match=r"DICOM.*looks like a PNG image"):
        read_image(tmp_path / "x.dcm")
    with pytest.raises(ReaderError, match="no pixel data"):
        read_image(dicom_path("waveform_ecg.dcm"))


# --- NIfTI -----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_volume_reverses_voxel_axes(tmp_path, suffix):
    voxels = np.random.default_rng(0).normal(size=(5, 6, 7)).astype(np.float32)  # (i, j, k)
    path = tmp_path / f"volume{suffix}"
    nibabel.save(nibabel.Nifti1Image(voxels, np.eye(4)), path)

    volume = read_image(path)

    assert volume.shape == (1, 7, 6, 5)  # (1, D=k, H=j, W=i)
    np.testing.assert_allclose(volume[0], percentile_scaled(voxels).transpose(), atol=1e-6)


def test_nifti_2d_and_singleton_axes(tmp_path):
    pixels = np.arange(30, dtype=np.float32).reshape(5, 6)
    nibabel.save(nibabel.Nifti1Image(pixels, np.eye(4)), tmp_path / "flat.nii")
    nibabel.save(nibabel.Nifti1Image(pixels[:, :, None, None], np.eye(4)), tmp_path / "slab.nii.gz")

    flat = read_image(tmp_path / "flat.nii")

    assert flat.shape == (1, 6, 5)
    np.testing.assert_allclose(flat[0], percentile_scaled(pixels).T, atol=1e-6)
    np.testing.assert_array_equal(read_image(tmp_path / "slab.nii.gz"), flat)


def test_nifti_4d_and_oversized_are_refused(tmp_path):
    nibabel.save(nibabel.Nifti1Image(np.zeros((3, 4, 5, 2), np.float32), np.eye(4)), tmp_path / "t.nii.gz")
    nibabel.save(nibabel.Nifti1Image(np.zeros((9, 9, 9), np.float32), np.eye(4)), tmp_path / "v.nii")

    with pytest.raises(ReaderError, match=r"2-D or 3-D.*\(3, 4, 5, 2\)"):
        read_image(tmp_path / "t.nii.gz")
    with pytest.raises(ReaderError, match="at most 500 pixels"):
        read_image(tmp_path / "v.nii", max_pixels=500)


# --- PNG / JPEG ------------------------------------------------------------------------------


def test_pneumoniamnist_png_round_trip(tmp_path):
    images = pneumonia_images(4)
    for index, pixels in enumerate(images):
        Image.fromarray(pixels).save(tmp_path / f"xray{index}.png")

    for index, pixels in enumerate(images):
        image = read_image(tmp_path / f"xray{index}.png")
        assert image.shape == (1, 28, 28) and image.dtype == np.float32
        np.testing.assert_allclose(image[0], pixels / 255, atol=1e-7)


def test_pneumoniamnist_jpeg_and_rgb_become_grey(tmp_path):
    pixels = pneumonia_images(1)[0]
    Image.fromarray(pixels).save(tmp_path / "xray.jpg", quality=95)
    rgb = Image.fromarray(np.stack([pixels, pixels // 2, 255 - pixels], axis=-1))
    rgb.save(tmp_path / "colour.png")

    jpeg = read_image(tmp_path / "xray.jpg")
    colour = read_image(tmp_path / "colour.png")

    assert jpeg.shape == (1, 28, 28)
    assert np.abs(jpeg[0] - pixels / 255).mean() < 0.02  # lossy, but the same X-ray
    np.testing.assert_allclose(colour[0], np.asarray(rgb.convert("L")) / 255, atol=1e-7)


def test_16_bit_png_keeps_its_depth(tmp_path):
    pixels = np.arange(0, 65536, 16, dtype=np.uint16).reshape(64, 64)
    Image.fromarray(pixels).save(tmp_path / "deep.png")

    image = read_image(tmp_path / "deep.png")

    np.testing.assert_allclose(image[0], pixels / 65535, atol=1e-7)
    assert len(np.unique(image)) == 4096  # 8 bits would leave at most 256 levels


@pytest.mark.parametrize(
    ("width", "height", "limits", "reason"),
    [
        (8_000, 8_000, {}, "at most 50,000,000 pixels"),  # ours, under Pillow's own limit
        (10_000, 10_000, {"max_pixels": 10**9}, "Pillow refused"),  # Pillow's warning
        (100_000, 100_000, {"max_pixels": 10**11, "max_side": 10**6}, "Pillow refused"),  # error
        (20_000, 4, {}, "16,384 per side"),
    ],
)
def test_decompression_bombs_are_refused(tmp_path, width, height, limits, reason):
    bomb = png_header_only(tmp_path / "bomb.png", width, height)

    with pytest.raises(ReaderError, match=reason):
        read_image(bomb, **limits)


def test_small_png_over_a_lower_limit_is_refused(tmp_path):
    Image.fromarray(pneumonia_images(1)[0]).save(tmp_path / "xray.png")

    with pytest.raises(ReaderError, match=r"at most 100 pixels.*\(28, 28\)"):
        read_image(tmp_path / "xray.png", max_pixels=100)


# --- NPY and dispatch ------------------------------------------------------------------------


def test_npy_round_trip_with_min_max(tmp_path):
    volume = np.random.default_rng(0).integers(-50, 300, size=(3, 5, 7)).astype(np.int16)
    np.save(tmp_path / "volume.npy", volume)
    np.save(tmp_path / "flat.npy", np.full((4, 4), 7.0))

    image = read_image(tmp_path / "volume.npy")

    assert image.shape == (1, 3, 5, 7)
    expected = (volume - volume.min()) / (volume.max() - volume.min())
    np.testing.assert_allclose(image[0], expected, atol=1e-6)
    np.testing.assert_array_equal(read_image(tmp_path / "flat.npy"), np.zeros((1, 4, 4)))


@pytest.mark.parametrize(
    ("array", "reason"),
    [
        (np.array([{"patient": 1}, None], dtype=object), "pickled objects are refused"),
        (np.array([[1.0, np.nan]]), "NaN or infinity"),
        (np.ones((2, 2), dtype=complex), "dtype is complex128"),
        (np.arange(5.0), r"2-D or 3-D .npy array, but its shape is \(5,\)"),
    ],
)
def test_bad_npy_is_refused(tmp_path, array, reason):
    np.save(tmp_path / "bad.npy", array, allow_pickle=True)

    with pytest.raises(ReaderError, match=reason):
        read_image(tmp_path / "bad.npy")


def test_unknown_extension_and_empty_file_are_refused(tmp_path):
    (tmp_path / "scan.tiff").write_bytes(b"II*\x00")
    (tmp_path / "empty.png").write_bytes(b"")

    with pytest.raises(ReaderError, match=re.escape("accepted: " + ", ".join(EXTENSIONS["image"]))):
        read_image(tmp_path / "scan.tiff")
    with pytest.raises(ReaderError, match="0 bytes"):
        read_image(tmp_path / "empty.png")
