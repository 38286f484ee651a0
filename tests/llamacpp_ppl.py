#!/usr/bin/env python3
"""llamacpp_ppl.py MODEL.gguf TEXT CONTEXT - runs a GGUF written by qtrain's exporter in
llama.cpp (PyPI llama-cpp-python: llama_cpp.Llama) and prints
    llamacpp perplexity P
after checking that:
  - the model loads and generates a few tokens without error;
  - the bytes tokenizer (tokenizer.ggml.model gpt2, 256 byte tokens, no merges) gives
    ids equal to the text's bytes, and detokenizing them gives the text back;
The perplexity is that of `qtrain eval MODEL --data TEXT --context N --stride N`
(train/eval.c qt_eval_perplexity()): non-overlapping windows, window k feeds tokens
[kN, kN + N) and scores the next token at each position, the last window shorter;
negative log-likelihoods from llama.cpp's logits (log-softmax in float64) averaged over
every scored token. Exits non-zero on any failure, including llama_cpp not importable."""
import math
import sys

import numpy as np

try:
    import llama_cpp
except Exception as e:  # no silent skip: the interop test needs llama.cpp
    print(f"FAIL: cannot import llama_cpp (pip install llama-cpp-python): {e}")
    sys.exit(1)


def main(model, text_path, ctx):
    text = open(text_path, "rb").read()
    llm = llama_cpp.Llama(model_path=model, n_ctx=ctx, n_batch=ctx, n_ubatch=ctx,
                          logits_all=True, n_threads=2, verbose=False, seed=1)
    ok = True
    # tokenizer: bytes in, bytes out
    ids = llm.tokenize(text, add_bos=False, special=False)
    if ids != list(text):
        bad = next((i for i, (a, b) in enumerate(zip(ids, text)) if a != b), min(len(ids), len(text)))
        print(f"FAIL: llama.cpp token ids are not the bytes ({len(ids)} ids for {len(text)} bytes; "
              f"first difference at {bad})")
        ok = False
    back = llm.detokenize(list(text))
    if back != text:
        print("FAIL: llama.cpp detokenize does not give the bytes back")
        ok = False
    # generation runs
    out = llm.create_completion(text[:16].decode("latin-1"), max_tokens=8, temperature=0.0)
    gen = out["choices"][0]["text"]
    print(f"llamacpp generated {len(gen)} chars: {gen!r}")
    # perplexity, qtrain eval's windows with stride == context
    toks = list(text)
    n = len(toks)
    nll, count = 0.0, 0
    begin = 0
    while begin < n - 1:
        end = min(begin + ctx + 1, n)
        inp = toks[begin:end - 1]
        llm.reset()
        llm.eval(inp)
        logits = np.asarray(llm.scores[:len(inp)], dtype=np.float64)
        m = logits.max(axis=1, keepdims=True)
        logz = (m + np.log(np.exp(logits - m).sum(axis=1, keepdims=True)))[:, 0]
        tgt = np.asarray(toks[begin + 1:end])
        nll += float((logz - logits[np.arange(len(inp)), tgt]).sum())
        count += len(inp)
        if end == n:
            break
        begin += ctx
    ppl = math.exp(nll / count)
    print(f"llamacpp tokens {count} loss {nll / count:.6f}")
    print(f"llamacpp perplexity {ppl:.6f}")
    return 0 if ok and math.isfinite(ppl) else 1


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print("usage: llamacpp_ppl.py MODEL.gguf TEXT CONTEXT")
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
