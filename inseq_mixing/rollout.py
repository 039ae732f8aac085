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


def mask_padding(mixing: Tensor, query_mask: Tensor, key_mask: Tensor) -> Tensor:
    """Zero the rows of padding queries and the columns of padding keys (extra columns beyond the keys are kept).

    ``mixing`` is ``[batch, ..., query, key]`` with any number of dimensions between batch and query (layers,
    heads); the masks are ``[batch, query]`` and ``[batch, key]``.
    """
    valid_keys = key_mask.bool()
    extra = mixing.shape[-1] - valid_keys.shape[-1]
    if extra:
        valid_keys = torch.cat([valid_keys, valid_keys.new_ones(valid_keys.shape[0], extra)], dim=-1)
    between = [1] * (mixing.dim() - 3)
    valid_qk = query_mask.bool().reshape(query_mask.shape[0], *between, -1, 1) & valid_keys.reshape(
        valid_keys.shape[0], *between, 1, -1
    )
    return torch.where(valid_qk, mixing, torch.zeros((), dtype=mixing.dtype, device=mixing.device))


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
    mixing = mixing if mixing.dtype == torch.float64 else mixing.float()
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


def encoder_decoder_rollout(
    encoder_rollout: Float[Tensor, "batch source source"],
    cross: Float[Tensor, "batch layer target source_1"],
    decoder: Float[Tensor, "batch layer target target"],
) -> Float[Tensor, "batch layer target source_target"]:
    """ALTI+'s rollout through a decoder: each target token's contributions from every source and target token.

    Ferrando, Gállego, Alastruey, Escolano & Costa-jussà, "Towards Opening the Black Box of Neural Machine
    Translation: Source and Target Interpretations of the Transformer", EMNLP 2022
    (https://aclanthology.org/2022.emnlp-main.599). With ``λ_t`` the residual column of the cross-attention
    matrix and ``Ĉ^sa_l = λ_t · C^sa_l``:
    ``R_1 = [C^ca_{1,src} R_enc | Ĉ^sa_1]`` and
    ``R_l = rownorm([C^ca_{l,src} R_enc + Ĉ^sa_l R^src_{l−1} | Ĉ^sa_l R^tgt_{l−1}])``.

    Args:
        encoder_rollout: The encoder's rollout through its last layer, ``R_enc``.
        cross: Row-normalized cross-attention matrices per decoder layer; the last column is the residual.
        decoder: Row-normalized decoder self-attention matrices per decoder layer.

    Returns:
        ``[batch, layer, target, source + target]``: entry ``l`` is the rollout through decoder layer ``l``, source
        columns first. Rows of real target tokens sum to 1.
    """
    cross, decoder, encoder_rollout = cross.float(), decoder.float(), encoder_rollout.float()
    n_source = encoder_rollout.shape[-1]
    out = []
    source_part = target_part = None
    for layer in range(cross.shape[1]):
        from_source = cross[:, layer, :, :n_source] @ encoder_rollout
        self_mixing = cross[:, layer, :, n_source:] * decoder[:, layer]  # λ_t · C^sa_l
        if source_part is None:
            source_part, target_part = from_source, self_mixing
        else:
            source_part, target_part = from_source + self_mixing @ source_part, self_mixing @ target_part
        combined = normalize_rows(torch.cat([source_part, target_part], dim=-1))
        source_part, target_part = combined[..., :n_source], combined[..., n_source:]
        out.append(combined)
    return torch.stack(out, dim=1)
