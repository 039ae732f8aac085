"""Value zeroing: time against one plain forward and against inseq 0.7.1's own value_zeroing, on the same output.

Run: ``python benchmarks/bench_value_zeroing.py [--lengths 32 128 512] [--inseq-max-length 128]``.
A GPT-2-small-shaped random model (12 layers, 12 heads, d_model 768) with a word-level tokenizer is saved to a
temporary folder and loaded by inseq. inseq's implementation runs only under transformers 4.x, after its GPT-2
config is told the value variable's name (``value_states``); under transformers 5 its column says why it is missing.
Both methods attribute the same forced text (the whole sequence after its first token), so they produce the same
``target_attributions``; the table reports their seconds, ratios to one plain forward, and the speed-up.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

import inseq_mixing  # noqa: F401  (registers the methods)

VOCAB = 50257


def save_model(folder: Path) -> Path:
    """A random GPT-2-small-shaped model and a word-level tokenizer (special tokens 0-3, then ``w<i>`` is id ``i``)."""
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=12, n_head=12, n_embd=768, vocab_size=VOCAB, n_positions=1024))
    model.save_pretrained(folder)
    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    vocab = {**{token: i for i, token in enumerate(specials)}, **{f"w{i}": i for i in range(len(specials), VOCAB)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    fast.save_pretrained(folder)
    return folder


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lengths", type=int, nargs="+", default=[32, 128, 512])
    parser.add_argument("--inseq-max-length", type=int, default=128, help="longest n to run inseq's version on")
    args = parser.parse_args()
    import inseq

    inseq_runs = int(transformers.__version__.split(".")[0]) < 5
    if inseq_runs:
        inseq.register_model_config(
            "GPT2LMHeadModel", {"self_attention_module": "attn", "value_vector": "value_states"},
            overwrite=True, allow_partial=True,
        )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        path = str(save_model(Path(tmp)))
        ours = inseq.load_model(path, "value_zeroing")
        theirs = inseq.load_model(path, "value_zeroing_inseq") if inseq_runs else None
        print(f"transformers {transformers.__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads")
        print("| n | forward s | ours s | ours ×fwd | ours ×fwd / n | inseq s | inseq ×fwd | speed-up |")
        print("|---|---|---|---|---|---|---|---|")
        for n in args.lengths:
            text = " ".join(f"w{10 + (7 * i) % 40000}" for i in range(n))
            first = text.split()[0]
            ids = ours.tokenizer(text, return_tensors="pt").input_ids
            with torch.no_grad():
                ours.model(ids)
                forward = min(timed(lambda ids=ids: ours.model(ids)) for _ in range(3))

            def run(model, text=text, first=first) -> None:
                model.attribute(first, text, show_progress=False)

            ours_s = timed(lambda: run(ours))
            row = f"| {n} | {forward:.3f} | {ours_s:.2f} | {ours_s / forward:.1f} | {ours_s / forward / n:.3f} |"
            if theirs is not None and n <= args.inseq_max_length:
                theirs_s = timed(lambda: run(theirs))
                row += f" {theirs_s:.1f} | {theirs_s / forward:.0f} | {theirs_s / ours_s:.1f}× |"
            else:
                reason = "not run (too slow)" if theirs is not None else "fails on transformers 5"
                row += f" {reason} | | |"
            print(row, flush=True)


if __name__ == "__main__":
    main()
