"""Writers for the synthetic cohort's files, one per modality, each in its real clinical format.

Every writer takes the patient's latent signal ``severity`` (a standard-normal component of the
patient state; higher = sicker) and a NumPy generator, and writes one file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile
import wfdb
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"

FINDINGS = (
    ("Alert and comfortable on room air.", "No acute distress overnight.", "Breathing unlaboured."),
    (
        "Mild shortness of breath on exertion.",
        "Occasional cough, afebrile.",
        "Slight ankle oedema.",
    ),
    (
        "Increased work of breathing, on 2 L nasal cannula.",
        "New fine crackles at both bases.",
        "Low-grade fever overnight.",
    ),
    (
        "Tachypnoeic and unwell, requiring 6 L oxygen.",
        "Confused at times, lactate rising.",
        "Poor urine output over the last shift.",
    ),
    (
        "Severe respiratory distress, escalated to high-flow oxygen.",
        "Hypotensive despite fluids, vasopressors discussed.",
        "Critical care outreach reviewed urgently.",
    ),
)
FILLER = (
    "Diet as tolerated.",
    "Family visited this afternoon.",
    "Physiotherapy review booked.",
    "Medication reconciliation completed.",
    "Patient watched television.",
    "Skin intact, pressure areas checked.",
    "Chaplain visit requested.",
    "Bed rails up, call bell in reach.",
)


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


def write_note(path: Path, severity: float, rng: np.random.Generator) -> None:
    """A nursing note: two findings sentences whose severity tracks the signal, among filler."""
    level = int(np.clip(np.round(1.0 * severity + 2.0 + rng.normal(0, 0.8)), 0, len(FINDINGS) - 1))
    findings = list(rng.choice(FINDINGS[level], size=2, replace=False))
    filler = list(rng.choice(FILLER, size=int(rng.integers(2, 5)), replace=False))
    sentences = findings + filler
    rng.shuffle(sentences)
    day = int(rng.integers(1, 6))
    path.write_text(f"Nursing note, day {day}. " + " ".join(sentences) + "\n", encoding="utf-8")


def chest_image(severity: float, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A 12-bit chest radiograph-like image with an opacity whose radius grows with severity.

    Returns:
        (size, size) uint16 array.
    """
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1) * 2 - 1
    body = 2600 * np.exp(-((xx / 0.95) ** 8 + (yy / 1.05) ** 8))
    lungs = sum(np.exp(-((((xx - cx) / 0.3) ** 2 + ((yy + 0.05) / 0.55) ** 2) ** 2)) for cx in (-0.42, 0.42))
    image = body - 1500 * lungs
    radius = 0.05 + 0.28 * _sigmoid(1.6 * severity + rng.normal(0, 0.4))
    cx, cy = rng.choice([-0.42, 0.42]) + rng.normal(0, 0.06), rng.normal(0.1, 0.15)
    image += 1300 * np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * radius**2)))
    image += rng.normal(0, 90, image.shape)
    return np.clip(image, 0, 4095).astype(np.uint16)


def write_dicom(path: Path, pixels: np.ndarray, patient_id: str, uid_seed: str) -> None:
    """Write ``pixels`` (H, W) uint16 as a CR chest PA DICOM file with the usual tags."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[uid_seed, "sop"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CR_IMAGE_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[uid_seed, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[uid_seed, "series"])
    ds.PatientID = patient_id
    ds.PatientName = "SYNTHETIC"
    ds.Modality = "CR"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.StudyDate = "20260101"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelSpacing = [5.6, 5.6]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.WindowCenter = 2048
    ds.WindowWidth = 4096
    ds.PixelData = pixels.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)


def heart_sound(
    severity: float, rng: np.random.Generator, sample_rate: int = 4000, duration_s: float = 3.0
) -> np.ndarray:
    """S1/S2 cycles with a systolic murmur whose loudness grows with severity.

    Returns:
        (duration_s * sample_rate,) float32 waveform in [-1, 1].
    """
    n = int(sample_rate * duration_s)
    t = np.arange(n) / sample_rate
    signal = rng.normal(0, 0.01, n)
    period = 60.0 / rng.uniform(60, 100)
    murmur_gain = 0.03 + 0.35 * _sigmoid(1.8 * severity - 0.5 + rng.normal(0, 0.4))
    noise = np.convolve(rng.normal(0, 1, n), np.hanning(9), mode="same")
    band = noise - np.convolve(noise, np.ones(25) / 25, mode="same")
    band /= np.abs(band).max() + 1e-9
    start = rng.uniform(0, period)
    while start < duration_s:
        for offset, freq, gain, length in ((0.0, 55, 0.8, 0.06), (0.32 * period, 75, 0.6, 0.05)):
            onset = start + offset
            window = (t >= onset) & (t < onset + length)
            local = t[window] - onset
            signal[window] += gain * np.sin(2 * np.pi * freq * local) * np.hanning(window.sum())
        systole = (t >= start + 0.07) & (t < start + 0.30 * period)
        signal[systole] += murmur_gain * band[systole] * np.hanning(systole.sum())
        start += period
    return (signal / max(1.0, np.abs(signal).max())).astype(np.float32)


def write_wav(path: Path, waveform: np.ndarray, sample_rate: int) -> None:
    soundfile.write(path, waveform, sample_rate, subtype="PCM_16")


VITAL_CHANNELS = ("HR", "SpO2", "MAP", "RR")


def write_vitals(path: Path, severity: float, rng: np.random.Generator, hours: float = 24.0) -> None:
    """Bedside vitals at irregular times (hours since admission) with gaps; trends follow severity.

    The CSV has a ``time`` column in hours and one column per channel; a blank cell is unobserved.
    """
    times, t = [], 0.0
    while t < hours:
        times.append(round(t, 3))
        t += rng.exponential(0.8) if rng.uniform() > 0.08 else rng.uniform(3, 6)
    time = np.asarray(times)
    frac = time / hours
    drift = severity + rng.normal(0, 0.6)
    channels = {
        "HR": 82 + 12 * drift * frac + rng.normal(0, 4, time.size),
        "SpO2": np.minimum(100, 97 - 3 * max(drift, 0) * frac + rng.normal(0, 1, time.size)),
        "MAP": 84 - 9 * drift * frac + rng.normal(0, 5, time.size),
        "RR": 16 + 4 * drift * frac + rng.normal(0, 1.5, time.size),
    }
    lines = ["time," + ",".join(VITAL_CHANNELS)]
    for i, hour in enumerate(time):
        cells = ["" if rng.uniform() < 0.15 else f"{channels[c][i]:.1f}" for c in VITAL_CHANNELS]
        lines.append(f"{hour:g}," + ",".join(cells))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def ecg_lead(
    severity: float, rng: np.random.Generator, fs: int = 250, duration_s: float = 10.0
) -> np.ndarray:
    """A single ECG lead (mV) whose rate and RR irregularity grow with severity.

    Returns:
        (fs * duration_s,) float64 signal.
    """
    n = int(fs * duration_s)
    t = np.arange(n) / fs
    rate = np.clip(72 + 16 * severity + rng.normal(0, 6), 45, 170)
    irregularity = 0.02 + 0.22 * _sigmoid(2.2 * (severity - 0.8) + rng.normal(0, 0.5))
    signal = 0.03 * np.sin(2 * np.pi * 0.25 * t + rng.uniform(0, 6.28)) + rng.normal(0, 0.02, n)
    beat = rng.uniform(0, 60 / rate)
    while beat < duration_s + 0.5:
        for offset, width, amp in (
            (-0.16, 0.025, 0.12),
            (0.0, 0.010, 1.1),
            (0.03, 0.012, -0.25),
            (0.25, 0.05, 0.3),
        ):
            signal += amp * np.exp(-(((t - beat - offset) / width) ** 2))
        beat += max(0.25, 60 / rate * (1 + rng.normal(0, irregularity)))
    return signal


def write_ecg(folder: Path, record: str, signal: np.ndarray, fs: int) -> None:
    """Write a one-lead WFDB record (``record.hea`` + ``record.dat``, format 16) into ``folder``."""
    wfdb.wrsamp(
        record,
        fs=fs,
        units=["mV"],
        sig_name=["II"],
        p_signal=signal.reshape(-1, 1),
        fmt=["16"],
        write_dir=str(folder),
    )
