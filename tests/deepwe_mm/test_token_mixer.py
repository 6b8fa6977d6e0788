"""Token groups and the token mixer: group means, masking and batch independence."""

from __future__ import annotations

import torch

from deepwe_mm.token_mixer import TokenMixer, attention_heads, pool_groups


def test_group_tokens_are_the_means_of_their_valid_tokens() -> None:
    tokens = torch.randn(3, 5, 7)
    valid = torch.tensor([[1, 1, 0, 1, 1], [0, 0, 0, 0, 1], [1, 1, 1, 1, 1]], dtype=torch.bool)
    groups = torch.tensor([0, 0, 0, 1, 2])
    pooled, seen = pool_groups(tokens, valid, groups, 3)
    assert pooled.shape == (3, 3, 7)
    torch.testing.assert_close(pooled[0, 0], tokens[0, :2].mean(0))
    torch.testing.assert_close(pooled[2, 0], tokens[2, :3].mean(0))
    assert seen.tolist() == [[True, True, True], [False, False, True], [True, True, True]]
    assert torch.equal(pooled[1, 0], torch.zeros(7))


def test_the_mixer_ignores_invalid_tokens_and_the_batch() -> None:
    mixer = TokenMixer(12, layers=2, heads=4, dropout=0.0).eval()
    tokens = torch.randn(4, 6, 12)
    valid = torch.rand(4, 6) < 0.6
    valid[:, 0] = True
    valid[3] = False  # nothing valid: the summary token alone
    changed = torch.where(valid.unsqueeze(-1), tokens, torch.randn(4, 6, 12) * 100)
    with torch.no_grad():
        together = mixer(tokens, valid)
        assert torch.allclose(together, mixer(changed, valid), atol=1e-5)
        for row in range(4):
            alone = mixer(tokens[row : row + 1], valid[row : row + 1])
            torch.testing.assert_close(alone[0], together[row], atol=1e-5, rtol=1e-4)
    assert torch.isfinite(together).all()


def test_heads_divide_the_width() -> None:
    assert attention_heads(48, 4) == 4
    assert attention_heads(13, 4) == 1
    assert attention_heads(18, 4) == 3
