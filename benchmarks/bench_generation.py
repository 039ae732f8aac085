"""Cost of attributing a 20-token generation against a 1-token one, through inseq.

Run: ``python benchmarks/bench_generation.py [--prompt-length 128] [--methods alti attention_norm]``.
A GPT-2-small-shaped random model with a word-level tokenizer is saved to a temporary folder and loaded by
``inseq.load_model``. For each method the table reports the seconds of ``model.attribute`` on a prompt followed by
1 and by 20 target tokens, forced (``generated_texts`` given) and generated (greedy, ``max_new_tokens``), and the
ratio of the two. inseq-mixing runs one forward pass over prompt and targets for all steps, so the ratio stays
close to the ratio of the sequence lengths, not to the number of steps.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from bench_value_zeroing import save_model

import inseq_mixing  # noqa: F401  (registers the methods)


def best_of(fn, repeats: int) -> float:
    """The fastest of ``repeats`` runs, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompt-length", type=int, default=128)
    parser.add_argument("--methods", nargs="+", default=["attention_rollout", "attention_norm", "globenc", "alti"])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    import inseq

    words = [f"w{10 + (7 * i) % 40000}" for i in range(args.prompt_length + 20)]
    prompt = " ".join(words[: args.prompt_length])
    forced = {steps: " ".join(words[: args.prompt_length + steps]) for steps in (1, 20)}
    print(f"GPT-2-small-shaped random model, prompt of {args.prompt_length} tokens, {torch.get_num_threads()} threads")
    print("| method | forced 1 s | forced 20 s | ratio | generated 1 s | generated 20 s | ratio |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        path = str(save_model(Path(tmp)))
        for method in args.methods:
            model = inseq.load_model(path, method)
            cells = []
            for mode in ("forced", "generated"):
                seconds = {}
                for steps in (1, 20):
                    if mode == "forced":
                        kwargs = {"generated_texts": forced[steps]}
                    else:
                        kwargs = {"generation_args": {"max_new_tokens": steps, "min_new_tokens": steps}}

                    def run(model=model, kwargs=kwargs) -> None:
                        model.attribute(prompt, show_progress=False, **kwargs)

                    run()  # warm up
                    seconds[steps] = best_of(run, args.repeats)
                cells += [f"{seconds[1]:.3f}", f"{seconds[20]:.3f}", f"{seconds[20] / seconds[1]:.2f}"]
            print(f"| {method} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
