"""The DeepWe fusion core: weighted embeddings at the feature, modality and patient level.

Pure torch. It receives, per named modality, token values (B, T, D), a token mask (B, T) and a
present flag (B,), and returns logits with every weight (:class:`DeepWeOutput`). It never imports
the encoders or the pipelines.
"""

from deepwe_mm.config import ABLATIONS, GATE_KINDS, DeepWeConfig
from deepwe_mm.ensemble import DeepWeEnsemble
from deepwe_mm.gates import SELECTED_ABOVE, FeatureGate, PatientContext
from deepwe_mm.losses import (
    DeepWeLoss,
    LossParts,
    auxiliary_cross_entropy,
    feature_sparsity,
    supervised_contrastive_loss,
)
from deepwe_mm.modality_attention import MeanFusion, ModalityAttention, drop_modalities
from deepwe_mm.model import DeepWe
from deepwe_mm.outputs import DeepWeOutput
from deepwe_mm.patient_graph import MemoryBank, PatientGraph, ReferenceCohort
from deepwe_mm.sparsemax import sparsemax

__all__ = [
    "ABLATIONS",
    "GATE_KINDS",
    "SELECTED_ABOVE",
    "DeepWe",
    "DeepWeConfig",
    "DeepWeEnsemble",
    "DeepWeLoss",
    "DeepWeOutput",
    "FeatureGate",
    "LossParts",
    "MeanFusion",
    "MemoryBank",
    "ModalityAttention",
    "PatientContext",
    "PatientGraph",
    "ReferenceCohort",
    "auxiliary_cross_entropy",
    "drop_modalities",
    "feature_sparsity",
    "sparsemax",
    "supervised_contrastive_loss",
]
