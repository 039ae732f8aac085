"""The rollout aggregator: hand-worked values and its invariants."""

from __future__ import annotations

import torch

from inseq_mixing import normalize_rows, rollout


def test_residual_rollout_hand_worked() -> None:
    # Two layers of A = [[1, 0], [0.5, 0.5]]: Ã = 0.5·A + 0.5·I = [[1, 0], [0.25, 0.75]].
    # R_1 = Ã; R_2 = Ã·Ã = [[1, 0], [0.25 + 0.75·0.25, 0.75²]] = [[1, 0], [0.4375, 0.5625]].
    a = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    result = rollout(torch.stack([a, a])[None], add_identity=True)
    torch.testing.assert_close(result[0, 0], torch.tensor([[1.0, 0.0], [0.25, 0.75]]))
    torch.testing.assert_close(result[0, 1], torch.tensor([[1.0, 0.0], [0.4375, 0.5625]]))


def test_plain_rollout_multiplies_newer_layer_on_the_left() -> None:
    first = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    second = torch.tensor([[0.5, 0.5], [0.0, 1.0]])
    result = rollout(torch.stack([first, second])[None], add_identity=False)
    torch.testing.assert_close(result[0, 0], first)
    torch.testing.assert_close(result[0, 1], second @ first)
    assert not torch.allclose(second @ first, first @ second)


def test_rows_sum_to_one_and_causal_stays_lower_triangular() -> None:
    torch.manual_seed(0)
    mixing = torch.rand(2, 4, 6, 6).tril()
    for add_identity in (True, False):
        result = rollout(mixing, add_identity=add_identity)
        torch.testing.assert_close(result.sum(-1), torch.ones(2, 4, 6))
        assert result.triu(1).abs().max() == 0


def test_padding_rows_and_columns_stay_zero() -> None:
    torch.manual_seed(0)
    mixing = torch.rand(1, 3, 5, 5)
    mixing[:, :, 3:] = 0
    mixing[:, :, :, 3:] = 0
    for add_identity in (True, False):
        result = rollout(mixing, add_identity=add_identity)
        assert result[..., 3:, :].abs().max() == 0 and result[..., :, 3:].abs().max() == 0
        torch.testing.assert_close(result[..., :3, :].sum(-1), torch.ones(1, 3, 3))
        unpadded = rollout(mixing[..., :3, :3], add_identity=add_identity)
        torch.testing.assert_close(result[..., :3, :3], unpadded)


def test_raw_rollout_multiplies_unnormalized_matrices() -> None:
    raw = torch.tensor([[[[2.0, 0.0], [1.0, 3.0]], [[1.0, 1.0], [0.0, 2.0]]]])
    result = rollout(raw, add_identity=False, normalize_layers=False)
    torch.testing.assert_close(result[0, 1], raw[0, 1] @ raw[0, 0])


def test_normalize_rows_keeps_zero_rows() -> None:
    result = normalize_rows(torch.tensor([[2.0, 6.0], [0.0, 0.0]]))
    torch.testing.assert_close(result, torch.tensor([[0.25, 0.75], [0.0, 0.0]]))
