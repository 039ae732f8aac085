"""A straightforward float64 implementation of Logit and ALTI-Logit (METHODS.md §10), for testing the fast one.

Everything is materialized from the verified per-layer records: ``T^l_{t←j}`` as explicit vectors, the final norm
linearized by hand from its real input at ``t``, ALTI from :func:`tests._naive.naive_measure`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._helpers import collect_records
from .._naive import attention_vectors, naive_measure, output_bias


def final_norm_input(model, input_ids: Tensor) -> tuple[Tensor, torch.nn.Module]:
    from inseq_mixing.extract import get_adapter
    from inseq_mixing.extract._modules import resolve

    norm = resolve(model.base_model, get_adapter(model).final_norm)
    seen = {}
    handle = norm.register_forward_pre_hook(lambda module, args: seen.update(x=args[0]))
    try:
        with torch.no_grad():
            model(input_ids=input_ids)
    finally:
        handle.remove()
    return seen["x"].double(), norm


def naive_logit(model, input_ids: Tensor, t: int, target: int, foil: int | None, track: bool) -> dict[str, Tensor]:
    """``per_layer [layer, seq]`` and ``rest`` of one unpadded sequence (batch of one) at position ``t``."""
    r, norm = final_norm_input(model, input_ids)
    r_t = r[0, t]
    u = model.get_output_embeddings().weight.double()[target]
    if foil is not None:
        u = u - model.get_output_embeddings().weight.double()[foil]
    kind = "rms" if "RMS" in type(norm).__name__ else "layer"
    gamma = norm.weight.double() + (1.0 if "Gemma" in type(norm).__name__ else 0.0)
    eps = float(getattr(norm, "eps", getattr(norm, "variance_epsilon", 1e-6)))
    centred = r_t - r_t.mean() if kind == "layer" else r_t
    sigma = torch.sqrt(centred.pow(2).mean() + eps)

    def logit_of(v: Tensor) -> Tensor:  # u · N_lin(v)
        v = v - v.mean(-1, keepdim=True) if kind == "layer" else v
        return (gamma * v / sigma) @ u

    records = collect_records(model.base_model, input_ids)
    per_layer, rest, rollout = [], {}, None
    for record in records:
        z = attention_vectors(record)[0, t]  # [seq, d]: T^l_{t←j}
        delta = logit_of(z)
        if track and rollout is not None:
            delta = delta @ rollout
        per_layer.append(delta)
        rest[f"attention_bias.{record.layer_idx}"] = logit_of(output_bias(record)[0, t])
        added = record.post_ffn_norm.output if record.post_ffn_norm is not None else record.ffn_output
        rest[f"mlp.{record.layer_idx}"] = logit_of(added[0, t].double())
        if record.layer_idx == 0:
            rest["embedding"] = logit_of(record.residual[0, t].double())
        alti = naive_measure(record, "alti")[0]
        alti = alti / alti.sum(-1, keepdim=True)
        rollout = alti if rollout is None else alti @ rollout
    rest["output_bias"] = (
        u @ norm.bias.double() if getattr(norm, "bias", None) is not None else torch.zeros((), dtype=torch.float64)
    )
    return {"per_layer": torch.stack(per_layer), "rest": rest}
