"""One rollout for every measure: aggregate per-layer mixing matrices across layers.

Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020 (https://aclanthology.org/2020.acl-main.385).
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor


def normalize_rows(matrix: Float[Tensor, "*batch query key"]) -> Float[Tensor, "*batch query key"]:
    """Divide every row by its sum; all-zero rows (padding) stay zero.

    >>> normalize_rows(torch.tensor([[1.0, 3.0], [0.0, 0.0]]))
    tensor([[0.2500, 0.7500],
            [0.0000, 0.0000]])
    """
    total = matrix.sum(dim=-1, keepdim=True)
    return matrix / torch.where(total == 0, torch.ones_like(total), total)


def rollout(
    mixing: Float[Tensor, "batch layer query key"],
    *,
    add_identity: bool,
    normalize_layers: bool = True,
) -> Float[Tensor, "batch layer query key"]:
    """Roll per-layer mixing matrices out across layers: ``R_1 = M̃_1``, ``R_l = M̃_l · R_{l−1}``.

    The newer layer multiplies on the left, so row ``i`` of ``R_l`` says how much token ``i``'s representation after
    layer ``l`` draws on every input token.

    - Raw attention and attention norms (measures without the residual): ``M̃_l = rownorm(M_l + I)``, which equals
      ``0.5·A_l + 0.5·I`` for row-stochastic ``A_l`` (Abnar & Zuidema's residual rollout; as the context-mixing
      toolkit's ``rollout(res=True)``).
    - Measures that already include the residual (norm+res, +LN, GlobEnc, ALTI, value zeroing): ``M̃_l = M_l``,
      the plain product (ALTI's ``compute_joint_attention``, the toolkit's ``rollout(res=False)``).

    Padding tokens have all-zero rows and columns in ``mixing`` (a row that is zero in every layer is taken as
    padding); they stay zero in the result. Causal (lower-triangular) inputs stay lower-triangular.

    Args:
        mixing: Per-layer matrices, row = receiving token, column = contributing token.
        add_identity: Add the identity before multiplying (for measures without the residual).
        normalize_layers: Row-normalize each layer's matrix before multiplying (the toolkit's default). With
            ``False`` the raw matrices are multiplied (GlobEnc's original rollout of raw norms).

    Returns:
        ``[batch, layer, query, key]`` in float32: entry ``l`` is the rollout through layer ``l``. With normalized
        layers, rows of non-padding tokens sum to 1.
    """
    mixing = mixing.float()
    if normalize_layers:
        mixing = normalize_rows(mixing)
    if add_identity:
        padding_bk = (mixing.sum(dim=-1) == 0).all(dim=1)  # padding rows are zero in every layer
        eye_qk = torch.eye(mixing.shape[-1], dtype=mixing.dtype, device=mixing.device)
        mixing = normalize_rows(mixing + eye_qk)
        mixing = mixing * (~padding_bk)[:, None, :, None] * (~padding_bk)[:, None, None, :]
    out = torch.empty_like(mixing)
    out[:, 0] = mixing[:, 0]
    for layer in range(1, mixing.shape[1]):
        out[:, layer] = mixing[:, layer] @ out[:, layer - 1]
    return out
