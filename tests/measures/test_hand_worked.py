"""Two tokens, one head, d_model 2: every number derived on paper."""

from __future__ import annotations

import math

import torch

from inseq_mixing.block import BlockForm
from inseq_mixing.measures import alti, attention, attention_norm, attention_norm_res, attention_norm_res_ln
from inseq_mixing.record import AttentionRecord, LayerRecord, NormRecord
from inseq_mixing.rollout import normalize_rows


def pre_ln_record() -> LayerRecord:
    """x1 = [1, 0], x2 = [1, 1]; W_V = I, b_V = 0, so v_j = x_j; W_O = diag(2, 1), b_O = 0: f1 = [2, 0], f2 = [2, 1].

    α = [[1, 0], [0.5, 0.5]], so z_11 = [2, 0], z_21 = [1, 0], z_22 = [1, 0.5] and the attention outputs are
    [2, 0] and [2, 0.5]. The residual stream after attention is m1 = [3, 0], m2 = [3, 1.5]. The FFN's input norm is
    an RMSNorm with γ = [1, 2], ε = 0.
    """
    x = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])
    m = torch.tensor([[[3.0, 0.0], [3.0, 1.5]]])
    gamma = torch.tensor([1.0, 2.0])
    rms = m.pow(2).mean(-1, keepdim=True).sqrt()
    return LayerRecord(
        layer_idx=0,
        form=BlockForm("pre_ln"),
        residual=x,
        attention=AttentionRecord(
            alpha=torch.tensor([[[[1.0, 0.0], [0.5, 0.5]]]]),
            values=x[:, None],
            w_o=torch.tensor([[[2.0, 0.0], [0.0, 1.0]]]),
            b_o=None,
            output=torch.tensor([[[2.0, 0.0], [2.0, 0.5]]]),
        ),
        norm1=NormRecord("rms", None, None, 0.0, x, x / x.pow(2).mean(-1, keepdim=True).sqrt()),
        norm2=NormRecord("rms", gamma, None, 0.0, m, gamma * m / rms),
        ffn_output=torch.zeros_like(m),
        output=m,
    )


def test_attention_is_the_head_mean() -> None:
    torch.testing.assert_close(attention(pre_ln_record()), torch.tensor([[[1.0, 0.0], [0.5, 0.5]]]))


def test_attention_norm() -> None:
    # ‖z_11‖ = 2, ‖z_21‖ = ‖[1, 0]‖ = 1, ‖z_22‖ = ‖[1, 0.5]‖ = √1.25
    expected = torch.tensor([[[2.0, 0.0], [1.0, math.sqrt(1.25)]]])
    torch.testing.assert_close(attention_norm(pre_ln_record()), expected)


def test_attention_norm_per_head_sums_to_head_mean_norm_for_one_head() -> None:
    record = pre_ln_record()
    torch.testing.assert_close(attention_norm(record, per_head=True)[:, 0], attention_norm(record))


def test_attention_norm_res_adds_the_residual_on_the_diagonal() -> None:
    # r_11 = [2, 0] + [1, 0] = [3, 0]; r_21 = [1, 0]; r_22 = [1, 0.5] + [1, 1] = [2, 1.5] → 2.5
    expected = torch.tensor([[[3.0, 0.0], [1.0, 2.5]]])
    torch.testing.assert_close(attention_norm_res(pre_ln_record()), expected)


def test_attention_norm_res_ln_goes_through_the_ffn_norm_in_pre_ln() -> None:
    # σ(m1) = √((9 + 0)/2) = √4.5, σ(m2) = √((9 + 2.25)/2) = √5.625.
    # t_11 = γ⊙[3, 0]/√4.5 → 3/√4.5 = √2; t_21 = γ⊙[1, 0]/√5.625 → 1/√5.625;
    # t_22 = γ⊙[2, 1.5]/√5.625 = [2, 3]/√5.625 → √13/√5.625
    expected = torch.tensor([[[math.sqrt(2), 0.0], [1 / math.sqrt(5.625), math.sqrt(13 / 5.625)]]])
    torch.testing.assert_close(attention_norm_res_ln(pre_ln_record()), expected)


def test_alti_uses_l1_distances_to_the_resultant() -> None:
    # Pre-LN: T = r. y1 = [3, 0]: c_11 = 3 − 0 = 3, c_12 = 3 − 3 = 0.
    # y2 = [3, 1.5], ‖y2‖₁ = 4.5: c_21 = 4.5 − ‖[2, 1.5]‖₁ = 1; c_22 = 4.5 − ‖[1, 0]‖₁ = 3.5.
    raw = alti(pre_ln_record())
    torch.testing.assert_close(raw, torch.tensor([[[3.0, 0.0], [1.0, 3.5]]]))
    torch.testing.assert_close(normalize_rows(raw), torch.tensor([[[1.0, 0.0], [1 / 4.5, 3.5 / 4.5]]]))
