"""HF tokenizers encode throughput on the tokenizer corpus (not a test; run by
scripts/bench-tokenizer next to bench_tokenizer). Plain-text tokenization, as
bench_tokenizer's BM_EncodeCorpus: the V4 tokenizer.json with its added-token
list emptied."""
import json
import os
import pathlib
import time

from tokenizers import Tokenizer

REPO = pathlib.Path(__file__).resolve().parents[2]


def main():
    j = json.loads((REPO / "data/tokenizer/deepseek-v4/tokenizer.json").read_text(encoding="utf-8"))
    j["added_tokens"] = []
    tok = Tokenizer.from_str(json.dumps(j))
    text = "".join(p.read_bytes().decode("utf-8")
                   for p in sorted((REPO / "tests/fixtures/tokenizer/corpus").glob("*.txt")))
    mb = len(text.encode("utf-8")) / 1e6
    tok.encode(text, add_special_tokens=False)  # warm up
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        n = len(tok.encode(text, add_special_tokens=False).ids)
        best = min(best, time.perf_counter() - t0)
    print(f"hf_tokenizers encode (one string, one thread): {mb / best:.2f} MB/s "
          f"({mb:.3f} MB, {n} tokens, best of 3: {best * 1e3:.1f} ms)")
    lines = text.split("\n")
    t0 = time.perf_counter()
    tok.encode_batch(lines, add_special_tokens=False)
    dt = time.perf_counter() - t0
    print(f"hf_tokenizers encode_batch (per line, {os.cpu_count()} threads allowed): {mb / dt:.2f} MB/s")


if __name__ == "__main__":
    main()
