"""The loaders over a split that training and scoring share, and the loss inputs they hand over."""

from __future__ import annotations

import torch

from pipelines.training.scoring import float_output, split_loader
from pipelines.training.train_config import TrainConfig


def test_a_lone_last_training_patient_is_dropped_not_batched_alone():
    config = TrainConfig(batch_size=4)
    for size, shuffled, batches in ((9, True, 2), (9, False, 3), (10, True, 3), (1, True, 1)):
        loader = split_loader(list(range(size)), None, config, torch.device("cpu"), shuffle=shuffled)
        assert len(loader) == batches, (size, shuffled)
        if shuffled and size > 1:  # training batches; prediction (unshuffled) keeps every patient
            assert all(len(batch) > 1 for batch in loader)


def test_the_loss_inputs_leave_bf16_autocast_in_float32():
    from dataclasses import replace

    from deepwe_mm import DeepWe
    from tests.deepwe_mm import TINY, make_batch

    config = replace(TINY, lambda_encoder=0.3)
    output = (
        DeepWe(config)
        .train()
        .to(torch.bfloat16)(
            *(
                {m: t.to(torch.bfloat16) if t.is_floating_point() else t for m, t in part.items()}
                for part in make_batch(config)
            )
        )
    )
    assert output.encoder_logits is not None and output.encoder_logits.dtype == torch.bfloat16
    cast = float_output(output)
    for tensor in (cast.logits, cast.fused, cast.modality_logits, cast.encoder_logits):
        assert tensor.dtype == torch.float32
