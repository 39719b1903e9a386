"""llama.cpp speed on this CPU: prompt evaluation and generation, tokens/s, one JSON line per run.

    python eval/llama_speed.py --model PATH.gguf [--no-extra-bufts] [--flash-attn] [--ubatch N] [--runs 5]

Run it under each llama-cpp-python build to compare them (the README's "Why llama.cpp is built for AVX2"
compares the Makefile's portable build with a native one, and extra buffer types on and off). It imports only
llama_cpp and numpy, so it runs in a bare venv holding another build.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import llama_cpp.llama_cpp as lib
from llama_cpp import Llama

# about 500 tokens of plain prose, the size of a four-passage answer prompt
PROMPT = (
    "Sources:\n\n[1] The river town kept its records in a stone granary near the old mill. "
    + " ".join(
        f"In year {1900 + i} the council met {i % 7 + 2} times, and the harvest filled {30 + i} barns "
        f"while the ferry carried {100 + 3 * i} passengers across the river."
        for i in range(14)
    )
    + "\n\nQuestion: How many barns did the harvest fill in 1905?\n\nAnswer in one sentence."
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--gen", type=int, default=48, help="tokens to generate per run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-extra-bufts", action="store_true")
    parser.add_argument("--label", default="")
    parser.add_argument("--flash-attn", action="store_true", help="llama.cpp's flash attention kernel")
    parser.add_argument("--ubatch", type=int, default=512, help="n_ubatch: tokens per compute batch")
    args = parser.parse_args()

    original = lib.llama_model_default_params

    def defaults():
        params = original()
        params.use_extra_bufts = not args.no_extra_bufts
        return params

    lib.llama_model_default_params = defaults
    llm = Llama(
        model_path=args.model,
        n_ctx=2048,
        n_threads=args.threads,
        n_batch=512,
        n_ubatch=args.ubatch,
        flash_attn=args.flash_attn,
        seed=0,
        verbose=False,
    )
    lib.llama_model_default_params = original
    tokens = llm.tokenize(PROMPT.encode(), add_bos=True)
    prompt_rates, gen_rates = [], []
    for _ in range(args.runs):
        llm.reset()
        t = time.perf_counter()
        llm.eval(tokens)
        prompt_rates.append(len(tokens) / (time.perf_counter() - t))
        t = time.perf_counter()
        made = 0
        while made < args.gen:  # greedy decoding, one token per eval, as an answer is written
            token = llm.sample(top_k=1, temp=0.0)
            if token == llm.token_eos():
                break
            llm.eval([token])
            made += 1
        gen_rates.append(made / (time.perf_counter() - t))
    info = lib.llama_print_system_info().decode()
    print(
        json.dumps(
            {
                "label": args.label,
                "extra_bufts": not args.no_extra_bufts,
                "flash_attn": args.flash_attn,
                "ubatch": args.ubatch,
                "prompt_tokens": len(tokens),
                "prompt_tok_s": [round(r, 1) for r in prompt_rates],
                "gen_tok_s": [round(r, 1) for r in gen_rates],
                "prompt_tok_s_median": round(statistics.median(prompt_rates), 1),
                "gen_tok_s_median": round(statistics.median(gen_rates), 1),
                "system_info": info.strip(),
            }
        )
    )


if __name__ == "__main__":
    main()
