"""The text encoder with the real all-MiniLM-L6-v2 weights, offline (HF_HUB_OFFLINE=1)."""

from __future__ import annotations

import csv
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from encoders import create_encoder, list_encoders
from encoders.text import (
    PAD_NAME,
    TINY_TEXT_CONFIG,
    TextEncoder,
    TextEncoderConfig,
    load_frozen_model,
    load_tokenizer,
    split_sentences,
)
from encoders.text_cache import EmbeddingCache
from tests.conftest import shared_file

NO_EFFUSION = "There is no pleural effusion or pneumothorax."
NO_FLUID = "No pneumothorax or pleural fluid is seen."
UNRELATED = "His daughter will bring his reading glasses to the ward tomorrow."
WIDTH = TINY_TEXT_CONFIG.max_tokens_per_chunk - 2  # word pieces per window, [CLS] and [SEP] aside


@pytest.fixture(scope="module")
def model_dir() -> str:
    """The packaged MiniLM folder, with its model and tokenizer loaded once for the module."""
    folder = str(TextEncoderConfig().resolved_model_dir())
    load_tokenizer(folder)
    load_frozen_model(folder)
    return folder


@pytest.fixture
def model_calls(model_dir: str):
    """A list that grows by one each time the shared frozen MiniLM runs."""
    calls: list[int] = []
    handle = load_frozen_model(model_dir).register_forward_pre_hook(lambda module, args: calls.append(1))
    yield calls
    handle.remove()


def embeddings(encoder: TextEncoder, notes: list[str | None]) -> torch.Tensor:
    """(B, T, 384) frozen MiniLM embeddings of ``notes``."""
    return encoder.collate(notes).tensors["embeddings"]


def test_both_variants_are_registered(model_dir: str) -> None:
    assert {"text", "text-tiny"} <= set(list_encoders())
    assert create_encoder("text", out_dim=17).out_dim == 17
    assert create_encoder("text-tiny").out_dim < create_encoder("text").out_dim


def test_similar_clinical_sentences_are_closer_than_an_unrelated_one(model_dir: str) -> None:
    encoder = create_encoder("text")
    effusion, fluid, unrelated = embeddings(encoder, [NO_EFFUSION, NO_FLUID, UNRELATED])[:, 0]
    similar = F.cosine_similarity(effusion, fluid, dim=0)
    assert similar > F.cosine_similarity(effusion, unrelated, dim=0) + 0.2
    assert similar > F.cosine_similarity(fluid, unrelated, dim=0) + 0.2


def test_sentence_token_is_minilm_mean_pooling(model_dir: str) -> None:
    tokenizer = load_tokenizer(model_dir)
    encoded = tokenizer([NO_EFFUSION], return_tensors="pt")
    with torch.no_grad():
        hidden = load_frozen_model(model_dir)(**encoded).last_hidden_state
    mask = encoded["attention_mask"][..., None].float()
    expected = F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)[0]
    torch.testing.assert_close(embeddings(create_encoder("text"), [NO_EFFUSION])[0, 0], expected)


def test_iu_xray_findings_give_one_named_token_per_sentence(model_dir: str) -> None:
    path = shared_file("iu_xray_reports", "indiana_reports.csv")
    with path.open(newline="", encoding="utf-8") as handle:
        findings = [row["findings"] for row in csv.DictReader(handle) if row["findings"].strip()]
    notes = findings[:4]
    encoder = create_encoder("text-tiny")
    batch = encoder.collate(notes)
    tokens = encoder(batch)
    cap, tokenizer = encoder.config.max_chunks, load_tokenizer(model_dir)
    for row, note in enumerate(notes):
        windows = [math.ceil(len(tokenizer.tokenize(s)) / WIDTH) for s in split_sentences(note)]
        first_window = np.cumsum([0, *windows[:-1]])
        kept = int((first_window < cap).sum())
        real = [name for name in batch.names[row] if name != PAD_NAME]
        assert real == [f"sentence {k + 1}" for k in range(kept)]
        assert int(tokens.mask[row].sum()) == kept
        assert int(batch.tensors["dropped_chunks"][row]) == max(0, sum(windows) - cap)
    assert batch.tensors["dropped_chunks"].sum() > 0  # these reports include a cut one
    assert all(re.fullmatch(r"sentence \d+|<pad>", n) for names in batch.names for n in names)
    # Sentences are encoded on their own: sentence 2 alone, and the note alone, match the batch.
    alone = embeddings(encoder, [split_sentences(notes[0])[1]])[0, 0]
    torch.testing.assert_close(batch.tensors["embeddings"][0, 1], alone, atol=1e-5, rtol=0)
    single = embeddings(encoder, notes[:1])[0]
    torch.testing.assert_close(batch.tensors["embeddings"][0, : single.shape[0]], single)


def test_split_sentences_rule() -> None:
    note = "Lactate 3.5 mmol/L today. No effusion!\n\nImpression: stable,\nwrapped line"
    assert split_sentences(note) == [
        "Lactate 3.5 mmol/L today.",
        "No effusion!",
        "Impression: stable,\nwrapped line",
    ]
    assert split_sentences(" \n\n ") == []


def test_token_granularity_names_word_pieces(model_dir: str) -> None:
    encoder = create_encoder("text-tiny", granularity="token")
    batch = encoder.collate([NO_FLUID])
    assert batch.names[0] == load_tokenizer(model_dir).tokenize(NO_FLUID)
    assert encoder(batch).values.shape == (1, len(batch.names[0]), encoder.out_dim)


def test_cache_is_written_then_hit_without_running_the_model(
    model_dir: str, model_calls: list[int], tmp_path
) -> None:
    encoder = create_encoder("text-tiny", cache_dir=str(tmp_path))
    notes = [NO_EFFUSION + " " + UNRELATED, NO_FLUID]
    first = embeddings(encoder, notes)
    assert model_calls, "the first pass must run MiniLM"
    cache = encoder.embedding_cache()
    assert cache is not None
    assert cache.folder.name.startswith(encoder.weights_sha256()[:16])
    assert all(cache.path(note).is_file() for note in notes)

    model_calls.clear()
    torch.testing.assert_close(embeddings(encoder, notes), first, atol=0, rtol=0)
    assert not model_calls, "a cached note must not run MiniLM again"

    embeddings(encoder, [UNRELATED])
    assert model_calls, "a note not in the cache must run MiniLM"


def test_unreadable_cache_file_is_recomputed(model_dir: str, tmp_path) -> None:
    encoder = create_encoder("text-tiny", cache_dir=str(tmp_path))
    first = embeddings(encoder, [NO_FLUID])
    cache = encoder.embedding_cache()
    assert isinstance(cache, EmbeddingCache)
    cache.path(NO_FLUID).write_bytes(b"\x00\x01 not safetensors")
    assert cache.get(NO_FLUID) is None
    torch.testing.assert_close(embeddings(encoder, [NO_FLUID]), first)
    assert cache.get(NO_FLUID) is not None


@pytest.mark.parametrize("granularity", ["token", "sentence"])
def test_long_note_is_chunked_and_dropped_chunks_are_counted(model_dir: str, granularity: str) -> None:
    rng = np.random.default_rng(3)
    sentences = TextEncoder.example_samples(40, rng)
    note = " ".join(" ".join(sentences).split() * 20)
    words = note.split()[:3000]
    note = " ".join(words)
    assert len(words) == 3000
    encoder = create_encoder("text-tiny", granularity=granularity)
    tokenizer = load_tokenizer(model_dir)
    if granularity == "token":
        pieces = len(tokenizer.tokenize(note))
        windows = math.ceil(pieces / WIDTH)
        kept_tokens = encoder.config.max_chunks * WIDTH
    else:
        lengths = [len(tokenizer.tokenize(s)) for s in split_sentences(note)]
        assert max(lengths) <= WIDTH  # so each kept window is one sentence token
        windows = len(lengths)
        kept_tokens = encoder.config.max_chunks
    batch = encoder.collate([note, NO_FLUID])
    assert windows > encoder.config.max_chunks > 1
    assert batch.tensors["n_chunks"].tolist() == [encoder.config.max_chunks, 1]
    assert batch.tensors["dropped_chunks"].tolist() == [windows - encoder.config.max_chunks, 0]
    assert int(encoder(batch).mask[0].sum()) == kept_tokens


def test_run_on_sentence_spans_windows_and_stays_one_token(model_dir: str) -> None:
    run_on = " ".join(["bilateral patchy airspace opacities"] * 15)
    encoder = create_encoder("text-tiny")
    batch = encoder.collate([run_on])
    windows = math.ceil(len(load_tokenizer(model_dir).tokenize(run_on)) / WIDTH)
    assert windows > 1
    assert batch.tensors["n_chunks"].tolist() == [windows]
    assert batch.tensors["dropped_chunks"].tolist() == [0]
    assert batch.names == [["sentence 1"]]


def test_missing_and_blank_notes_are_absent(model_dir: str) -> None:
    encoder = create_encoder("text-tiny")
    batch = encoder.collate([NO_FLUID, None, "  \n ", "\x00\x01", NO_EFFUSION])
    tokens = encoder(batch)
    assert batch.present.tolist() == [True, False, False, False, True]
    assert not tokens.mask[1:4].any()
    assert torch.count_nonzero(tokens.values[1:4]) == 0
    assert batch.names[1] == [PAD_NAME] * tokens.values.shape[1]
    assert batch.tensors["n_chunks"].tolist() == [1, 0, 0, 0, 1]
    all_missing = encoder(encoder.collate([None, None]))
    assert all_missing.values.shape == (2, 1, encoder.out_dim)
    assert not all_missing.mask.any()


def test_frozen_path_trains_only_the_projection(model_dir: str) -> None:
    encoder = create_encoder("text-tiny").train()
    assert {name for name, _ in encoder.named_parameters()} == {
        "projection.weight",
        "projection.bias",
    }
    assert not any(p.requires_grad for p in load_frozen_model(model_dir).parameters())
    encoder(encoder.collate([NO_FLUID, NO_EFFUSION])).values.square().sum().backward()
    assert encoder.projection.weight.grad is not None
    assert encoder.projection.weight.grad.abs().sum() > 0


def test_finetuning_top_layer_gets_gradient_and_lower_layers_do_not(model_dir: str) -> None:
    encoder = create_encoder("text-tiny", finetune_top_layers=1).train()
    backbone = encoder.backbone
    assert backbone is not None and not backbone.training
    batch = encoder.collate([NO_FLUID, None, NO_EFFUSION + " " + UNRELATED])
    assert "embeddings" not in batch.tensors
    encoder(batch).values.square().sum().backward()
    top, bottom = backbone.encoder.layer[-1], backbone.encoder.layer[0]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in top.parameters())
    assert all(p.grad is None for p in bottom.parameters())
    assert all(p.grad is None for p in backbone.embeddings.parameters())
    assert encoder.projection.weight.grad is not None
    assert not any(p.requires_grad for p in load_frozen_model(model_dir).parameters())


def test_finetune_and_frozen_paths_agree_before_training(model_dir: str) -> None:
    notes = [NO_EFFUSION + " " + UNRELATED, None, NO_FLUID]
    frozen = create_encoder("text-tiny")
    tuned = create_encoder("text-tiny", finetune_top_layers=2)
    tuned.projection.load_state_dict(frozen.projection.state_dict())
    expected = frozen(frozen.collate(notes))
    with torch.no_grad():
        got = tuned(tuned.collate(notes))
    torch.testing.assert_close(got.values, expected.values.detach(), atol=1e-5, rtol=0)
    assert got.names == expected.names


def test_example_samples_are_short_notes(model_dir: str) -> None:
    samples = TextEncoder.example_samples(5, np.random.default_rng(0))
    assert len(samples) == 5
    assert all(isinstance(s, str) and 1 <= len(split_sentences(s)) <= 3 for s in samples)
    assert samples == TextEncoder.example_samples(5, np.random.default_rng(0))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_tokens_per_chunk": 300}, "at most 256"),
        ({"granularity": "word"}, "'sentence' or 'token'"),
        ({"finetune_top_layers": 7}, "has 6 layers"),
        ({"out_dims": 8}, "did you mean 'out_dim'"),
        ({"model_dir": "/nonexistent/model"}, "model.safetensors"),
    ],
)
def test_bad_settings_are_refused_with_the_reason(overrides: dict, message: str) -> None:
    with pytest.raises((ValueError, FileNotFoundError), match=re.escape(message)):
        create_encoder("text", **overrides)


def test_a_sample_that_is_not_text_is_refused(model_dir: str) -> None:
    with pytest.raises(TypeError, match="sample 1: expected the note as str"):
        create_encoder("text-tiny").collate([NO_FLUID, b"bytes"])
