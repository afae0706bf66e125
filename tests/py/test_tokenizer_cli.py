"""`ds4 tokenize` / `ds4 detokenize` on a GGUF carrying the V4 tokenizer, vs HF tokenizers."""
import json

import pytest
from tokenizers import Tokenizer

from conftest import REPO, run

TOKENIZER_JSON = REPO / "data/tokenizer/deepseek-v4/tokenizer.json"
TEXT = "Ciao <｜User｜> città! 12345 你好 👨‍👩‍👧 <think>x</think>\n\tdef f(): return 1"


@pytest.fixture(scope="module")
def model(tmp_path_factory, tool):
    path = tmp_path_factory.mktemp("tokcli") / "tok.gguf"
    run([tool("tok_tool"), "make-gguf", str(TOKENIZER_JSON), str(path)])
    return str(path)


@pytest.fixture(scope="module")
def hf():
    full = Tokenizer.from_file(str(TOKENIZER_JSON))
    j = json.loads(TOKENIZER_JSON.read_text(encoding="utf-8"))
    j["added_tokens"] = []
    return full, Tokenizer.from_str(json.dumps(j))


def test_tokenize_plain_and_special(ds4_bin, model, hf):
    full, plain = hf
    got = json.loads(run([ds4_bin, "tokenize", "-m", model, TEXT]).stdout)
    assert got == plain.encode(TEXT, add_special_tokens=False).ids
    got = json.loads(run([ds4_bin, "tokenize", "-m", model, "--special", TEXT]).stdout)
    assert got == full.encode(TEXT, add_special_tokens=False).ids
    assert full.token_to_id("<｜User｜>") in got


def test_tokenize_stdin(ds4_bin, model, hf):
    got = json.loads(run([ds4_bin, "tokenize", "-m", model, "-"], input=TEXT).stdout)
    assert got == hf[1].encode(TEXT, add_special_tokens=False).ids


def test_detokenize_round_trip(ds4_bin, model, hf):
    ids = hf[0].encode(TEXT, add_special_tokens=False).ids
    out = run([ds4_bin, "detokenize", "-m", model, *map(str, ids)])
    assert out.stdout == TEXT
    out = run([ds4_bin, "detokenize", "-m", model], input=json.dumps(ids))
    assert out.stdout == TEXT


@pytest.mark.parametrize("args, message", [
    (["detokenize", "129280"], "token id 129280 is out of range"),
    (["detokenize", "12x"], "'12x' is not a token id"),
])
def test_bad_input_is_one_clear_error(ds4_bin, model, args, message):
    p = run([ds4_bin, args[0], "-m", model, *args[1:]], check=False)
    assert p.returncode != 0
    assert message in p.stderr


def test_missing_tokenizer_metadata(ds4_bin, tmp_path, tool):
    bad = tmp_path / "bad.gguf"
    # a GGUF with no tokenizer keys at all, written by gguf-py
    import gguf
    w = gguf.GGUFWriter(str(bad), "deepseek4")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    p = run([ds4_bin, "tokenize", "-m", str(bad), "x"], check=False)
    assert p.returncode != 0
    assert "missing key 'tokenizer.ggml.model'" in p.stderr
