"""The loaders over a split that training and scoring share."""

from __future__ import annotations

import torch

from pipelines.training.scoring import split_loader
from pipelines.training.train_config import TrainConfig


def test_a_lone_last_training_patient_is_dropped_not_batched_alone():
    config = TrainConfig(batch_size=4)
    for size, shuffled, batches in ((9, True, 2), (9, False, 3), (10, True, 3), (1, True, 1)):
        loader = split_loader(list(range(size)), None, config, torch.device("cpu"), shuffle=shuffled)
        assert len(loader) == batches, (size, shuffled)
        if shuffled and size > 1:  # training batches; prediction (unshuffled) keeps every patient
            assert all(len(batch) > 1 for batch in loader)
