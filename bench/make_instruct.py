"""make_instruct.py - a small instruction set for the LoRA experiment, from the
quickstart's English text (build/data/fortunes.txt): JSONL records {"prompt", "response"}
of three tasks a byte-level model can learn and whose answers follow from the prompt:
  "Uppercase: <s>\n"  -> "<S>"        (every letter capitalised)
  "Repeat: <s>\n"     -> "<s>"
  "First word: <s>\n" -> "<its first word>"
with s a sentence of 20-100 characters from the text. The training loss sees only the
response (qtrain's JSONL prompt/response masking); the held-out split is the file's tail.
usage: python3 make_instruct.py SRC.txt OUT.jsonl [N]
"""
import json
import random
import re
import sys


def main():
    src, out = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 20000
    text = open(src, encoding="utf-8", errors="replace").read()
    sents = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n\s*\n", text)]
    sents = [" ".join(s.split()) for s in sents]
    sents = [s for s in sents if 20 <= len(s) <= 100 and s.isascii()]
    rng = random.Random(1234)
    rng.shuffle(sents)
    tasks = [("Uppercase: ", str.upper), ("Repeat: ", lambda s: s),
             ("First word: ", lambda s: s.split()[0])]
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        for i, s in enumerate(sents[:n]):
            name, fn = tasks[i % 3]
            f.write(json.dumps({"prompt": f"{name}{s}\n", "response": fn(s)}) + "\n")
    import os
    os.replace(tmp, out)
    print(f"make_instruct: {min(n, len(sents))} records from {len(sents)} sentences -> {out}")


if __name__ == "__main__":
    main()
