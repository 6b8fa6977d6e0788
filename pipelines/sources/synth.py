"""``deepwe synth``: a synthetic multimodal cohort in real file formats, with its known answer.

A latent patient state drives a binary outcome. The state has one standard-normal component per
modality; the outcome's log-odds is a weighted sum of the components, and each modality shows only its
own component through noise. So each modality alone is weakly informative, and they are complementary:
fusing them recovers more of the log-odds than any one of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from sklearn.metrics import roc_auc_score

from data_schemas import CohortSpec
from pipelines.sources import synth_files as files

PCG_RATE = 4000
ECG_RATE = 250
# log-odds weight of each modality's latent component (the ground truth of "how much signal")
SIGNAL_WEIGHTS = {"labs": 1.5, "notes": 1.35, "cxr": 1.2, "vitals": 1.2, "pcg": 0.9, "ecg": 0.9}
INTERCEPT = -1.9
FILE_MODALITIES = ("notes", "cxr", "pcg", "vitals", "ecg")
LAB_VALUES = ("lactate", "creatinine", "sodium", "potassium", "bmi", "glucose")
INFORMATIVE = {
    "labs": ["lactate", "creatinine", "age"],
    "notes": ["findings sentences (severity level tracks the signal)"],
    "cxr": ["opacity radius"],
    "pcg": ["systolic murmur loudness"],
    "vitals": ["HR, MAP, RR and SpO2 trends over 24 h"],
    "ecg": ["heart rate", "RR-interval irregularity"],
}
NOISE = {
    "labs": ["sodium", "potassium", "bmi", "glucose", "sex", "admission_type"],
    "notes": ["filler sentences", "day number"],
    "cxr": ["opacity side", "image noise"],
    "pcg": ["heart rate", "background noise"],
    "vitals": ["measurement noise"],
    "ecg": ["baseline wander", "measurement noise"],
}


@dataclass(frozen=True)
class SynthResult:
    spec_path: Path
    n: int
    prevalence: float


def cohort_spec(name: str = "synthetic") -> CohortSpec:
    """The spec of a synthetic cohort (the same for every size and seed)."""
    return CohortSpec.model_validate(
        {
            "name": name,
            "description": "DeepWe-MM synthetic cohort; see ground_truth.json for the known answer",
            "table": "cohort.csv",
            "id": "patient_id",
            "outcome": {"column": "died", "task": "binary", "positive": 1},
            "split": {"column": "split"},
            "modalities": {
                "labs": {
                    "kind": "tabular",
                    "numeric": ["age", *LAB_VALUES],
                    "categorical": ["sex", "admission_type"],
                },
                "notes": {"kind": "text", "column": "note_path"},
                "cxr": {"kind": "image", "column": "cxr_path"},
                "pcg": {
                    "kind": "audio",
                    "column": "pcg_path",
                    "sample_rate": PCG_RATE,
                    "duration_s": 3.0,
                },
                "vitals": {
                    "kind": "sensor",
                    "column": "vitals_path",
                    "channels": list(files.VITAL_CHANNELS),
                    "period_s": 3600,
                    "time_unit": "h",
                    "duration_s": 86400,
                },
                "ecg": {
                    "kind": "sensor",
                    "column": "ecg_path",
                    "channels": ["II"],
                    "sample_rate": ECG_RATE,
                },
            },
            "subgroups": ["sex", "age_band"],
        }
    )


def _labs(z: float, rng: np.random.Generator, missing: bool) -> dict[str, str]:
    age = float(np.clip(62 + 9 * z + rng.normal(0, 13), 18, 98))
    row = {
        "age": f"{age:.0f}",
        "sex": str(rng.choice(["F", "M"])),
        "admission_type": str(rng.choice(["medical", "surgical", "emergency"])),
    }
    values = {
        "lactate": np.exp(0.35 + 0.38 * z + rng.normal(0, 0.22)),
        "creatinine": np.exp(0.05 + 0.25 * z + rng.normal(0, 0.3)),
        "sodium": rng.normal(139, 3.5),
        "potassium": rng.normal(4.2, 0.45),
        "bmi": rng.normal(27, 5),
        "glucose": np.exp(rng.normal(1.9, 0.25)),
    }
    sporadic = {
        "lactate": 0.2,
        "creatinine": 0.05,
        "sodium": 0.05,
        "potassium": 0.05,
        "bmi": 0.1,
        "glucose": 0.05,
    }
    for key, value in values.items():
        row[key] = "" if missing or rng.uniform() < sporadic[key] else f"{value:.2f}"
    return row


def _age_band(age: str) -> str:
    years = int(age)
    return "18-49" if years < 50 else "50-69" if years < 70 else "70+"


def generate_cohort(
    out: str | Path, *, n: int = 1000, seed: int = 0, missing_rate: float = 0.2, signal_scale: float = 1.0
) -> SynthResult:
    """Write ``cohort.yaml``, ``cohort.csv``, ``ground_truth.json`` and every patient file into ``out``.

    Args:
        out: output folder (created; files inside it are overwritten).
        n: number of patients.
        seed: the only source of randomness; the same seed writes the same cohort.
        missing_rate: probability that each file modality, and the lab values, are missing for a
            patient. Demographics (age, sex, admission type) are always recorded, so no patient has
            every modality missing.
        signal_scale: multiplies every modality's log-odds weight (2 makes the outcome much easier
            to predict, for smoke tests of training).
    """
    if n < 10:
        raise ValueError(f"n must be at least 10 patients, got {n}")
    if signal_scale <= 0:
        raise ValueError(f"signal_scale must be positive, got {signal_scale}")
    if not 0.0 <= missing_rate < 1.0:
        raise ValueError(f"missing_rate must be in [0, 1), got {missing_rate}")
    out = Path(out)
    for folder in FILE_MODALITIES:
        (out / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = list(SIGNAL_WEIGHTS)
    latent = rng.normal(0, 1, size=(n, len(names)))
    weights = signal_scale * np.array([SIGNAL_WEIGHTS[m] for m in names])
    logit = latent @ weights + INTERCEPT
    risk = 1 / (1 + np.exp(-logit))
    outcome = (rng.uniform(size=n) < risk).astype(int)
    split = rng.choice(["train", "val", "test"], size=n, p=[0.7, 0.15, 0.15])
    component = {m: latent[:, i] for i, m in enumerate(names)}

    header = [
        "patient_id",
        "died",
        "split",
        "age",
        "sex",
        "admission_type",
        *LAB_VALUES,
        "age_band",
    ]
    header += [f"{m}_path" if m != "notes" else "note_path" for m in FILE_MODALITIES]
    lines = [",".join(header)]
    patients = []
    for i in range(n):
        pid = f"SYN-{i + 1:05d}"
        prng = np.random.default_rng([seed, i])
        missing = {m: bool(prng.uniform() < missing_rate) for m in ("labs", *FILE_MODALITIES)}
        row = {"patient_id": pid, "died": str(outcome[i]), "split": str(split[i])}
        row |= _labs(component["labs"][i], prng, missing["labs"])
        row["age_band"] = _age_band(row["age"])
        row |= _write_files(out, pid, {m: component[m][i] for m in FILE_MODALITIES}, missing, prng)
        lines.append(",".join(row[c] for c in header))
        patients.append(
            {
                "patient_id": pid,
                "latent": {m: round(float(component[m][i]), 6) for m in names},
                "logit": round(float(logit[i]), 6),
                "risk": round(float(risk[i]), 6),
                "outcome": int(outcome[i]),
                "missing": sorted(m for m, flag in missing.items() if flag),
            }
        )
    (out / "cohort.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    spec = cohort_spec()
    spec_path = out / "cohort.yaml"
    spec_path.write_text(
        "# Synthetic DeepWe-MM cohort written by `deepwe synth`; the known answer is in ground_truth.json\n"
        + yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True), sort_keys=False),
        encoding="utf-8",
    )
    truth = _ground_truth(n, seed, missing_rate, component, weights, logit, outcome, patients)
    (out / "ground_truth.json").write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")
    return SynthResult(spec_path=spec_path, n=n, prevalence=float(outcome.mean()))


def _write_files(
    out: Path,
    pid: str,
    severity: dict[str, float],
    missing: dict[str, bool],
    rng: np.random.Generator,
) -> dict[str, str]:
    cells = {"note_path": "", "cxr_path": "", "pcg_path": "", "vitals_path": "", "ecg_path": ""}
    if not missing["notes"]:
        files.write_note(out / "notes" / f"{pid}.txt", severity["notes"], rng)
        cells["note_path"] = f"notes/{pid}.txt"
    if not missing["cxr"]:
        pixels = files.chest_image(severity["cxr"], rng)
        files.write_dicom(out / "cxr" / f"{pid}.dcm", pixels, pid, uid_seed=pid)
        cells["cxr_path"] = f"cxr/{pid}.dcm"
    if not missing["pcg"]:
        files.write_wav(
            out / "pcg" / f"{pid}.wav", files.heart_sound(severity["pcg"], rng, PCG_RATE), PCG_RATE
        )
        cells["pcg_path"] = f"pcg/{pid}.wav"
    if not missing["vitals"]:
        files.write_vitals(out / "vitals" / f"{pid}.csv", severity["vitals"], rng)
        cells["vitals_path"] = f"vitals/{pid}.csv"
    if not missing["ecg"]:
        files.write_ecg(out / "ecg", pid, files.ecg_lead(severity["ecg"], rng, ECG_RATE), ECG_RATE)
        cells["ecg_path"] = f"ecg/{pid}.hea"
    return cells


def _ground_truth(n, seed, missing_rate, component, weights, logit, outcome, patients) -> dict:
    has_both = 0 < outcome.sum() < len(outcome)

    def oracle_auroc(score: np.ndarray) -> float | None:
        return round(float(roc_auc_score(outcome, score)), 4) if has_both else None

    return {
        "generator": "deepwe synth",
        "seed": seed,
        "n": n,
        "missing_rate": missing_rate,
        "signal_scale": float(weights[0] / SIGNAL_WEIGHTS["labs"]),
        "prevalence": round(float(outcome.mean()), 4),
        "outcome": f"died ~ Bernoulli(sigmoid(sum_m signal_weight_m * latent_m {INTERCEPT:+}))",
        "oracle_auroc_all": oracle_auroc(logit),
        "modalities": {
            m: {
                "signal_weight": float(weights[i]),
                "informative": INFORMATIVE[m],
                "noise": NOISE[m],
                "oracle_auroc": oracle_auroc(component[m]),
                "missing_rate": 0.0 if m == "labs" else missing_rate,
                "note": "lab values missing at missing_rate; demographics always recorded"
                if m == "labs"
                else None,
            }
            for i, m in enumerate(SIGNAL_WEIGHTS)
        },
        "modality_ranking": sorted(SIGNAL_WEIGHTS, key=lambda m: -SIGNAL_WEIGHTS[m]),
        "patients": patients,
    }
