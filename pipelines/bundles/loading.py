"""``load_bundle``: a verified model bundle, rebuilt and ready for the stages that predict,
evaluate and explain with it. The notebook methods (``bundle.predict_proba(cohort)`` and the
others) are those of :class:`pipelines.api.NotebookBundle`, which ``pipelines.load_bundle`` returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from data_schemas import CohortSpec
from pipelines.bundles.bundle_io import BundleContents, BundleError, read_bundle
from pipelines.bundles.model_builder import MultimodalModel, build_model, text_model_identity
from pipelines.evaluation.ood import EmbeddingDistance


@dataclass
class Bundle:
    """A loaded bundle: the model in eval mode with its reference cohort set, and its settings.

    Attributes:
        model: encoders + fusion core, on ``device``, in eval mode.
        classes: class labels in output order (binary: negative, positive).
        temperature: the calibration temperature for the logits.
        threshold: the decision threshold on the calibrated positive risk (binary), else None.
    """

    contents: BundleContents
    model: MultimodalModel
    device: torch.device

    @property
    def path(self) -> Path:
        return self.contents.path

    @property
    def spec(self) -> CohortSpec:
        return self.contents.manifest.cohort_spec

    @property
    def sha256(self) -> str:
        return self.contents.sha256

    @property
    def classes(self) -> list[str]:
        return list(self.contents.preprocessing["classes"])

    @property
    def preprocessing(self) -> dict[str, Any]:
        return self.contents.preprocessing

    @property
    def temperature(self) -> float:
        return float(self.contents.calibration["temperature"])

    @property
    def logit_shift(self) -> float:
        """The positive-logit shift of the calibration, already folded into the weights (0 for
        bundles calibrated by temperature alone)."""
        return float(self.contents.calibration.get("logit_shift", 0.0))

    @cached_property
    def embedding_distance(self) -> EmbeddingDistance:
        """The out-of-distribution scorer over this bundle's reference cohort (built on first use)."""
        return EmbeddingDistance(self.contents.reference["embeddings"])

    @property
    def threshold(self) -> float | None:
        threshold = self.contents.calibration.get("threshold")
        return None if threshold is None else float(threshold["value"])

    @property
    def metrics(self) -> dict[str, Any]:
        """What training measured (``metrics.json``): validation and test metrics, history, splits."""
        return self.contents.metrics


def load_bundle(path: str | Path, *, device: str | torch.device = "cpu") -> Bundle:
    """Verify every hash of the bundle at ``path``, rebuild its model and set its reference cohort.

    Raises:
        BundleError: the bundle is altered, incomplete, of an unknown format, or its text model
            differs from the one it was trained with.
    """
    contents = read_bundle(path)
    config = contents.config
    try:
        model = build_model(
            config["encoders"], config["fusion"], int(config.get("ensemble", 1)), config.get("trees")
        )
    except (KeyError, TypeError, ValueError) as error:
        raise BundleError(
            f"{path}: config.json does not describe a model this release can build ({error})"
        ) from None
    expected = contents.preprocessing.get("text_models", {})
    for name, identity in text_model_identity(model).items():
        if expected.get(name, {}).get("weights_sha256") != identity["weights_sha256"]:
            raise BundleError(
                f"{path}: modality {name!r} was trained with a text model whose weights differ from "
                f"{identity['model_dir']} (sha256 mismatch)"
            )
    try:
        model.load_state_dict(contents.weights, strict=True)
    except RuntimeError as error:
        raise BundleError(f"{path}: weights.safetensors does not fit config.json ({error})") from None
    device = torch.device(device)
    model.to(device).eval()
    reference = contents.reference
    model.core.set_reference(
        reference["embeddings"].to(device), contents.reference_ids, reference.get("labels", None)
    )
    return Bundle(contents=contents, model=model, device=device)
