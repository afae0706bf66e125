"""Our tokenizer vs Hugging Face `tokenizers` running the real tokenizer.json files.

Oracles: `Tokenizer.from_file(tokenizer.json)` for text with special-token parsing,
and the same file with its added-token list emptied for plain text (that is the
no-special-parsing tokenization: pre-tokenizer + BPE only). Both the DeepSeek V4
tokenizer (data/tokenizer/deepseek-v4) and the V3 one (tests/fixtures) are checked
on the committed corpus (tests/fixtures/tokenizer/corpus, > 1 MB), whole files and
line by line, plus a sweep over every Unicode scalar value.
"""
import gzip
import json
import pathlib
import shutil
import unicodedata

import pytest
from tokenizers import Tokenizer

from conftest import REPO, run

CORPUS = sorted((REPO / "tests/fixtures/tokenizer/corpus").glob("*.txt"))
V4_DIR = REPO / "data/tokenizer/deepseek-v4"
V3_DIR = REPO / "tests/fixtures/tokenizer/deepseek-v3"


class Vocab:
    def __init__(self, name, json_path, gguf_path):
        self.name = name
        self.json_path = json_path
        self.gguf = str(gguf_path)
        self.full = Tokenizer.from_file(str(json_path))
        j = json.loads(pathlib.Path(json_path).read_text(encoding="utf-8"))
        j["added_tokens"] = []
        self.plain = Tokenizer.from_str(json.dumps(j))


@pytest.fixture(scope="session", params=["v4", "v3"])
def vocab(request, tmp_path_factory, tool):
    d = tmp_path_factory.mktemp(f"tok-{request.param}")
    if request.param == "v4":
        src = V4_DIR / "tokenizer.json"
    else:
        src = d / "tokenizer.json"
        src.write_bytes(gzip.decompress((V3_DIR / "tokenizer.json.gz").read_bytes()))
        shutil.copy(V3_DIR / "tokenizer_config.json", d / "tokenizer_config.json")
    gguf_path = d / "tok.gguf"
    run([tool("tok_tool"), "make-gguf", str(src), str(gguf_path)])
    return Vocab(request.param, src, gguf_path)


def ours(tool, vocab, path, *flags):
    return json.loads(run([tool("tok_tool"), "encode", vocab.gguf, str(path), *flags]).stdout)


def first_diff(a, b):
    for k, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return k
    return min(len(a), len(b))


def assert_same_ids(got, want, what):
    if got != want:
        k = first_diff(got, want)
        raise AssertionError(f"{what}: ids differ at {k}: ours {got[k:k + 8]} vs HF {want[k:k + 8]} "
                             f"(lengths {len(got)} vs {len(want)})")


def test_corpus_is_large_enough():
    assert len(CORPUS) >= 10
    assert sum(p.stat().st_size for p in CORPUS) >= 1_000_000


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_whole_file_matches_hf(tool, vocab, path):
    text = path.read_bytes().decode("utf-8")
    want = vocab.plain.encode(text, add_special_tokens=False).ids
    assert_same_ids(ours(tool, vocab, path), want, f"{vocab.name} {path.name}")


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_each_line_matches_hf(tool, vocab, path):
    lines = path.read_bytes().decode("utf-8").split("\n")
    want = [e.ids for e in vocab.plain.encode_batch(lines, add_special_tokens=False)]
    got = ours(tool, vocab, path, "--lines")
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        assert_same_ids(g, w, f"{vocab.name} {path.name} line {k + 1}")


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_decode_and_stream_roundtrip(tool, vocab, path, tmp_path):
    ids = ours(tool, vocab, path)
    ids_file = tmp_path / "ids.json"
    ids_file.write_text(json.dumps(ids))
    run([tool("tok_tool"), "decode", vocab.gguf, str(ids_file), str(tmp_path / "dec")])
    assert (tmp_path / "dec").read_bytes() == path.read_bytes()
    # One token at a time; the tool exits 3 if any chunk is not valid UTF-8.
    run([tool("tok_tool"), "stream", vocab.gguf, str(ids_file), str(tmp_path / "stream")])
    assert (tmp_path / "stream").read_bytes() == path.read_bytes()
    # HF decodes our ids to the same text.
    assert vocab.full.decode(ids, skip_special_tokens=False) == path.read_bytes().decode("utf-8")


def unicode_sweep_text():
    """Every assigned Unicode scalar value, 48 per line, each line also with the
    values interleaved with spaces and digits so every character is seen alone
    and next to each category the regexes distinguish.

    KNOWN LIMITATION: "assigned" means assigned in Unicode 14.0, the version of
    both this Python's unicodedata and Debian 12's PCRE2 10.42. HF's Oniguruma
    knows Unicode 15/16, so the ~10k code points assigned since (a few dozen
    emoji such as U+1FA77 PINK HEART among them) are Cn for PCRE2 and tokenize
    differently until PCRE2 >= 10.45 is used. Noncharacters (Cn in every
    version) stay in the sweep."""
    def assigned(c):
        return unicodedata.category(chr(c)) != "Cn" or (0xFDD0 <= c <= 0xFDEF) or (c & 0xFFFE) == 0xFFFE
    cps = [c for c in range(1, 0x110000) if not 0xD800 <= c <= 0xDFFF and c != 0x0A and assigned(c)]
    lines = []
    for i in range(0, len(cps), 48):
        chunk = "".join(chr(c) for c in cps[i:i + 48])
        lines.append(chunk)
        lines.append(" ".join(chunk) + " a" + "1".join(chunk[:16]))
    return "\n".join(lines)


def test_every_code_point_matches_hf(tool, vocab, tmp_path):
    text = unicode_sweep_text()
    path = tmp_path / "sweep.txt"
    path.write_bytes(text.encode("utf-8"))
    lines = text.split("\n")
    want = [e.ids for e in vocab.plain.encode_batch(lines, add_special_tokens=False)]
    got = ours(tool, vocab, path, "--lines")
    bad = [k for k, (g, w) in enumerate(zip(got, want)) if g != w]
    assert len(got) == len(want)
    assert not bad, (f"{len(bad)} of {len(lines)} lines differ (unicodedata {unicodedata.unidata_version}); "
                     f"first: {lines[bad[0]][:60]!r}")


def test_special_parsing_matches_hf(tool, vocab, tmp_path):
    """With --special every added token (special or not) is matched as HF does."""
    text = (REPO / "tests/fixtures/tokenizer/corpus/special_spellings.txt").read_bytes().decode("utf-8")
    added = [t.content for t in vocab.full.get_added_tokens_decoder().values()]
    # every added token, glued to neighbours in ways that could confuse a matcher
    text += "".join(f"x{a}{a}<{a} {a[:-1]}|{a}\n" for a in added)
    path = tmp_path / "special.txt"
    path.write_bytes(text.encode("utf-8"))
    want = vocab.full.encode(text, add_special_tokens=False).ids
    assert_same_ids(ours(tool, vocab, path, "--special"), want, f"{vocab.name} special")
    # ... and without --special none of them may appear.
    plain = ours(tool, vocab, path)
    added_ids = set(vocab.full.get_added_tokens_decoder())
    assert not added_ids.intersection(plain)
    assert_same_ids(plain, vocab.plain.encode(text, add_special_tokens=False).ids, f"{vocab.name} plain")
