"""The whole constructor contract of the DeepWe fusion core, as one frozen dataclass."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

GATE_KINDS = ("stochastic", "sigmoid", "sparsemax")
PROJECTIONS = ("linear", "mlp")

# Benchmark ablations by name: each one turns exactly one part of DeepWe off.
ABLATIONS: dict[str, dict[str, Any]] = {
    "no_feature_gates": {"use_feature_gates": False},
    "with_flat_readout": {"flat_readout": True},
    "gates_without_context": {"gate_context": False},
    "sigmoid_gates": {"gate": "sigmoid"},
    "no_gate_positions": {"gate_positions": False},
    "with_gate_leak": {"gate_leak": 0.1},
    "with_encoder_heads": {"lambda_encoder": 0.3},
    "no_random_masking": {"token_dropout": 0.0},
    "attention_only_fusion": {"additive_fusion": False},
    "no_auxiliary_heads": {"lambda_auxiliary": 0.0},
    "with_token_mixing": {"token_layers": 2},
    "with_mlp_projection": {"projection": "mlp"},
    "with_modality_dropout": {"modality_dropout": 0.15},
    "mean_fusion": {"use_modality_attention": False},
    "no_graph": {"use_graph": False},
    "no_neighbour_outcomes": {"graph_outcomes": False},
    "no_contrastive": {"use_contrastive": False},
    "no_sparsity": {"use_sparsity": False},
    "no_teacher": {"lambda_teacher": 0.0},
    "no_tree_evidence": {"tree_evidence": False},
}


@dataclass(frozen=True)
class DeepWeConfig:
    """Settings of :class:`deepwe_mm.DeepWe` and :class:`deepwe_mm.DeepWeLoss`.

    Attributes:
        modality_dims: modality name -> token width D_m. Its order is the modality axis M of every
            output (``DeepWeOutput.modality_weights`` columns).
        n_classes: C, the number of outcome classes; 2 for a binary outcome (softmax over two
            logits, one code path for binary and multiclass).
        hidden_dim: H, the width of modality tokens and fused embeddings; divisible by ``n_heads``.
        n_heads: heads of the modality attention.
        dropout: dropout inside the fusion block, the graph update and before the head.
        gate: feature gate kind: ``"stochastic"`` (instance-wise stochastic gates: noisy
            ``clamp(μ + σε, 0, 1)`` in training, its mean ``E[clamp(μ + σε, 0, 1)]`` at inference,
            an expected-L0 penalty), ``"sigmoid"`` (an independent weight in (0, 1) per token) or
            ``"sparsemax"`` (sparsemax over the observed tokens of a modality, divided by its
            maximum, so weights lie in [0, 1] with the top token at 1 and some exactly 0).
        gate_target: the share of a patient's observed tokens the gates aim to keep open; the
            sparsity term only penalises the expected share above it. None = penalise every open
            token (plain L0).
        gate_leak: stochastic gates: the share of the gradient that passes the clamp where
            ``μ + σε`` falls outside [0, 1], so a gate that closed (or saturated) early can still
            learn to reopen (or close); 0 = the plain clamp.
        gate_positions: the gates of a modality in ``token_counts`` learn one score offset per
            token position (per variable), so a variable can be selected or dropped for everyone
            while the scoring network adds the per-patient part.
        token_dropout: in training, the probability that an observed token is replaced by its
            gate baseline whatever its weight, so the predictor also learns from randomly masked
            inputs and a gate pattern cannot smuggle the label (Jethani et al. 2021).
        additive_fusion: each present modality adds its own head's logits and each absent one a
            learned missing bias, on top of the attention-fused interaction term; False keeps the
            interaction term only.
        lambda_auxiliary: weight of the auxiliary cross-entropy of each modality head alone
            (averaged over modalities, on the patients that have the modality).
        lambda_encoder: weight of the encoder heads' cross-entropy: in training, a linear head per
            modality on the mean of its ungated tokens predicts the outcome on the patients that
            have the modality. It keeps every encoder learning while its gates are shut, so the
            gates (which read its tokens) have something to reopen for. 0 = no encoder heads.
        lambda_teacher: weight of the cross-entropy against a teacher's class probabilities
            (knowledge distillation; the training pipeline fits the teacher, a gradient-boosting
            model cross-fitted on the training patients' scalar features and file summaries). 0 = no teacher.
        tree_evidence: keep the teacher's fitted trees in the model and add their log-odds to the
            logits, with a weight chosen on the validation split (0 when they do not help there).
            Only where every modality gives its scalar features per batch (tabular values, series
            statistics), since the model reads them in its forward pass.
        modality_dropout: in training, the probability of hiding each present modality of a
            patient (at least one always stays); 0 turns it off.
        token_layers: transformer layers in which a modality's gated tokens (or token groups)
            interact before a summary token reads them out: one number for every modality, or
            modality -> layers (a modality not listed gets 0). 0 (the default) = the mean of the
            gated tokens: with mixing, the feature gates stopped telling informative variables
            from noise on a small labs cohort (the summary's attention does the selecting).
        token_heads: attention heads of those layers (the most up to this that divide D_m).
        projection: how a modality's read-out gated tokens become its modality token (width H):
            ``"linear"`` (a linear map and a LayerNorm; the default) or ``"mlp"`` (a hidden layer
            of width 2H with GELU first, so one modality's head can combine its variables
            non-additively, e.g. x1 · x2). With ``"mlp"`` the model can also ignore a noise
            variable by itself, so the feature gates have less reason to close: on a small labs
            cohort they stopped telling informative labs from noise.
        token_counts: modality -> its fixed number of tokens T_m (token t is always the same
            variable, e.g. a tabular column or a sensor statistic), for the flat readout.
        flat_readout: a modality in ``token_counts`` is read out by concatenating its gated tokens
            (B, T_m · D_m) into the projection, so the model keeps which variable held which
            value and can learn interactions such as x1 · x2 (as an MLP on numerical embeddings
            does; Gorishniy et al. 2022). False (the default: better on PhysioNet 2012's
            validation folds), or a modality with a varying token count (notes, images, audio),
            pools them.
        token_groups: modality -> the group of each of its tokens (e.g. a sensor channel's
            statistics); gated tokens of a group are averaged into one token before they
            interact. A modality not listed keeps its tokens apart.
        gate_context: the feature gates score each token together with a summary of the whole
            patient (every modality that takes part; instance-wise selection); False scores each
            token alone.
        graph_top_k: K, neighbours per patient in the reference cohort.
        graph_outcomes: the graph's messages carry the neighbours' outcomes (the reference cohort's
            training labels; in training, other patients' labels, never a patient's own).
        memory_size: rows of the training memory bank (detached fused embeddings of recent
            batches) that the graph attends to in training, together with the rest of the batch;
            in eval mode without a reference it is the fixed neighbour pool. 0 = batch only.
        use_feature_gates: False gives every observed token weight 1 (plain mean pooling).
        use_modality_attention: False fuses by the mean of the present modality tokens.
        use_graph: False drops the patient graph (no neighbours).
        use_contrastive: False drops the supervised contrastive loss term.
        use_sparsity: False drops the feature-weight sparsity loss term.
        lambda_contrastive: λ1, the weight of the contrastive term.
        lambda_sparsity: λ2, the weight of the sparsity term.
        contrastive_temperature: τ of the supervised contrastive loss.
        class_weights: optional cross-entropy weight per class (length ``n_classes``).
    """

    modality_dims: Mapping[str, int]
    n_classes: int = 2
    hidden_dim: int = 64
    n_heads: int = 4
    dropout: float = 0.2
    gate: str = "stochastic"
    gate_target: float | None = None
    gate_leak: float = 0.0
    gate_positions: bool = True
    token_dropout: float = 0.1
    additive_fusion: bool = True
    lambda_auxiliary: float = 0.3
    lambda_encoder: float = 0.0
    lambda_teacher: float = 1.0
    tree_evidence: bool = True
    modality_dropout: float = 0.0
    token_layers: int | Mapping[str, int] = 0
    projection: str = "linear"
    token_heads: int = 4
    token_groups: Mapping[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    token_counts: Mapping[str, int] = dataclasses.field(default_factory=dict)
    flat_readout: bool = False
    gate_context: bool = True
    graph_top_k: int = 8
    graph_outcomes: bool = True
    memory_size: int = 256
    use_feature_gates: bool = True
    use_modality_attention: bool = True
    use_graph: bool = True
    use_contrastive: bool = True
    use_sparsity: bool = True
    lambda_contrastive: float = 0.1
    lambda_sparsity: float = 0.01
    contrastive_temperature: float = 0.1
    class_weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        # JSON and YAML hand over dicts and lists; copy them so the caller cannot mutate the config.
        object.__setattr__(self, "modality_dims", {str(k): int(v) for k, v in self.modality_dims.items()})
        object.__setattr__(
            self, "token_groups", {str(k): tuple(int(g) for g in v) for k, v in self.token_groups.items()}
        )
        object.__setattr__(self, "token_counts", {str(k): int(v) for k, v in self.token_counts.items()})
        if isinstance(self.token_layers, Mapping):
            object.__setattr__(self, "token_layers", {str(k): int(v) for k, v in self.token_layers.items()})
        if self.class_weights is not None:
            object.__setattr__(self, "class_weights", tuple(float(w) for w in self.class_weights))
        self._check()

    def _check(self) -> None:
        problems = []
        if not self.modality_dims:
            problems.append("modality_dims needs at least one modality")
        problems += [
            f"modality_dims[{name!r}] must be >= 1, got {dim}"
            for name, dim in self.modality_dims.items()
            if dim < 1 or not name
        ]
        if self.n_classes < 2:
            problems.append(f"n_classes must be >= 2 (2 for binary), got {self.n_classes}")
        if self.hidden_dim < 1 or self.n_heads < 1 or self.hidden_dim % self.n_heads:
            problems.append(
                f"hidden_dim must be a positive multiple of n_heads, got {self.hidden_dim} and {self.n_heads}"
            )
        if self.projection not in PROJECTIONS:
            problems.append(f"projection must be one of {PROJECTIONS}, got {self.projection!r}")
        if self.gate not in GATE_KINDS:
            problems.append(f"gate must be one of {GATE_KINDS}, got {self.gate!r}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.gate_leak <= 1.0:
            problems.append(f"gate_leak must be in [0, 1], got {self.gate_leak}")
        if not 0.0 <= self.token_dropout < 1.0:
            problems.append(f"token_dropout must be in [0, 1), got {self.token_dropout}")
        if self.gate_target is not None and not 0.0 < self.gate_target <= 1.0:
            problems.append(f"gate_target must be in (0, 1] or null, got {self.gate_target}")
        if self.lambda_auxiliary < 0:
            problems.append(f"lambda_auxiliary must be >= 0, got {self.lambda_auxiliary}")
        if self.lambda_encoder < 0:
            problems.append(f"lambda_encoder must be >= 0, got {self.lambda_encoder}")
        if self.lambda_teacher < 0:
            problems.append(f"lambda_teacher must be >= 0, got {self.lambda_teacher}")
        if not 0.0 <= self.modality_dropout < 1.0:
            problems.append(f"modality_dropout must be in [0, 1), got {self.modality_dropout}")
        layers = self.token_layers.values() if isinstance(self.token_layers, Mapping) else [self.token_layers]
        if min(layers, default=0) < 0 or self.token_heads < 1:
            problems.append(
                f"token_layers must be >= 0 and token_heads >= 1, got {self.token_layers} and {self.token_heads}"
            )
        if isinstance(self.token_layers, Mapping):
            problems += [
                f"token_layers[{name!r}] must name a configured modality"
                for name in self.token_layers
                if name not in self.modality_dims
            ]
        problems += [
            f"token_groups[{name!r}] must name a configured modality and hold group indices >= 0"
            for name, groups in self.token_groups.items()
            if name not in self.modality_dims or not groups or min(groups) < 0
        ]
        problems += [
            f"token_counts[{name!r}] must name a configured modality and be >= 1, got {count}"
            for name, count in self.token_counts.items()
            if name not in self.modality_dims or count < 1
        ]
        if self.graph_top_k < 1:
            problems.append(f"graph_top_k must be >= 1, got {self.graph_top_k}")
        if self.memory_size < 0:
            problems.append(f"memory_size must be >= 0, got {self.memory_size}")
        if self.lambda_contrastive < 0 or self.lambda_sparsity < 0:
            problems.append(
                f"loss lambdas must be >= 0, got lambda_contrastive={self.lambda_contrastive} and "
                f"lambda_sparsity={self.lambda_sparsity}"
            )
        if self.contrastive_temperature <= 0:
            problems.append(f"contrastive_temperature must be > 0, got {self.contrastive_temperature}")
        if self.class_weights is not None and (
            len(self.class_weights) != self.n_classes or any(w <= 0 for w in self.class_weights)
        ):
            problems.append(
                f"class_weights must hold {self.n_classes} positive numbers, got {self.class_weights}"
            )
        if problems:
            raise ValueError("invalid DeepWeConfig: " + "; ".join(problems))

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modality names in the order of the modality axis M."""
        return tuple(self.modality_dims)

    def layers_of(self, modality: str) -> int:
        """The token-mixing layers of ``modality`` (0 = the mean of its gated tokens)."""
        if isinstance(self.token_layers, Mapping):
            return self.token_layers.get(modality, 0)
        return self.token_layers

    def ablate(self, name: str) -> DeepWeConfig:
        """This config with one of :data:`ABLATIONS` applied.

        Raises:
            ValueError: ``name`` is not an ablation.
        """
        if name not in ABLATIONS:
            raise ValueError(f"unknown ablation {name!r}; available: {', '.join(ABLATIONS)}")
        return replace(self, **ABLATIONS[name])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (plain dicts, lists, numbers, strings) that :meth:`from_dict` reads."""
        data = dataclasses.asdict(self)
        data["modality_dims"] = dict(self.modality_dims)
        data["token_groups"] = {name: list(groups) for name, groups in self.token_groups.items()}
        data["token_counts"] = dict(self.token_counts)
        if isinstance(self.token_layers, Mapping):
            data["token_layers"] = dict(self.token_layers)
        data["class_weights"] = None if self.class_weights is None else list(self.class_weights)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeepWeConfig:
        """Rebuild a config from :meth:`to_dict` output (e.g. a bundle's ``config.json``).

        Raises:
            ValueError: an unknown key (with the closest known one), or an invalid value.
        """
        known = [f.name for f in fields(cls)]
        unknown = [key for key in data if key not in known]
        if unknown:
            hints = [
                f"{key!r}"
                + "".join(f" (did you mean {m!r}?)" for m in difflib.get_close_matches(key, known, 1))
                for key in unknown
            ]
            raise ValueError(f"unknown DeepWeConfig keys: {', '.join(hints)}")
        if "modality_dims" not in data:
            raise ValueError("DeepWeConfig needs 'modality_dims' (modality name -> token width)")
        return cls(**data)
