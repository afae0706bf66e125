"""`ds4 run` one-shot mode on a random-weight V4-architecture model that uses
the real V4 tokenizer: greedy reproducibility, --dump-logprobs against logits
computed by `ds4 logits`, --dump-tokens against Hugging Face tokenizers, and
one clear error for bad input."""
import json

import numpy as np
import pytest

from conftest import REPO, run

TOKENIZER = REPO / "data/tokenizer/deepseek-v4/tokenizer.json"


def make_model(ds4_bin, tmp_path_factory):
    """One small model per pytest run, shared by the run/repl/bench tests."""
    path = tmp_path_factory.getbasetemp() / "gen-model.gguf"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        run([ds4_bin, "synth", "--shape", str(REPO / "scripts/demo-model.json"), "--layers", "2",
             "--recipe", "q8_0", "--tokenizer", str(TOKENIZER), "--seed", "11", "-o", str(tmp)])
        tmp.rename(path)
    return str(path)


@pytest.fixture(scope="module")
def model(ds4_bin, tmp_path_factory):
    return make_model(ds4_bin, tmp_path_factory)


GREEDY = ["--nothink", "--temp", "0", "-n", "8", "-t", "2"]


def test_greedy_is_reproducible(ds4_bin, model):
    a = run([ds4_bin, "run", "-m", model, "-p", "Hello there", *GREEDY])
    b = run([ds4_bin, "run", "-m", model, "-p", "Hello there", *GREEDY])
    assert a.stdout == b.stdout
    assert a.stdout.strip()
    assert "ds4: prefill:" in a.stderr and "generation:" in a.stderr
    assert "random weights" in a.stderr


def test_seeded_sampling_is_reproducible(ds4_bin, model):
    args = [ds4_bin, "run", "-m", model, "-p", "Hi", "--nothink", "-n", "12", "-t", "2", "--temp", "1.5"]
    a = run(args + ["--seed", "5"])
    b = run(args + ["--seed", "5"])
    c = run(args + ["--seed", "6"])
    assert a.stdout == b.stdout
    assert a.stdout != c.stdout


def test_dump_logprobs_matches_logits_and_greedy_run(ds4_bin, model, tmp_path):
    dump, trace = tmp_path / "lp.json", tmp_path / "trace.txt"
    run([ds4_bin, "run", "-m", model, "-p", "Count to three", *GREEDY, "--dump-logprobs", str(dump),
         "--logprobs-top-k", "5", "--trace", str(trace)])
    doc = json.loads(dump.read_text())
    assert doc["source"] == "ds4" and doc["top_k"] == 5 and doc["ctx"] == 32768
    steps = doc["steps"]
    assert 1 <= len(steps) <= 8
    for i, s in enumerate(steps):
        assert s["step"] == i
        top = s["top_logprobs"]
        assert len(top) == 5
        assert top[0]["token"]["id"] == s["selected"]["id"]  # greedy: top-1 is the pick
        lps = [t["logprob"] for t in top]
        assert all(lp <= 0 for lp in lps) and lps == sorted(lps, reverse=True)

    # Independent path: `ds4 logits` over prompt + chosen tokens gives the same
    # top candidates and log-probabilities at every step.
    prompt = [int(t) for t in trace.read_text().splitlines()[0].split(":")[1].split()]
    assert doc["prompt_tokens"] == len(prompt)
    chosen = [s["selected"]["id"] for s in steps]
    seq = prompt + chosen[:-1]
    out = tmp_path / "l.f32"
    run([ds4_bin, "logits", "-m", model, "--numerics", "faithful", "--tokens", ",".join(map(str, seq)),
         "-o", str(out), "-t", "2"])
    lg = np.fromfile(out, dtype=np.float32).reshape(len(seq), -1).astype(np.float64)
    for i, s in enumerate(steps):
        row = lg[len(prompt) - 1 + i]
        lsm = row - (row.max() + np.log(np.exp(row - row.max()).sum()))
        assert int(np.argmax(row)) == s["selected"]["id"], f"step {i}"
        for t in s["top_logprobs"]:
            assert abs(lsm[t["token"]["id"]] - t["logprob"]) < 2e-3

    # The greedy run prints exactly the selected tokens' text (EOS not shown).
    text = run([ds4_bin, "run", "-m", model, "-p", "Count to three", *GREEDY]).stdout
    eos = 1
    shown = b"".join(bytes(s["selected"]["bytes"]) for s in steps if s["selected"]["id"] != eos)
    assert text.rstrip("\n") == shown.decode("utf-8", "replace").rstrip("\n")


def test_dump_tokens_matches_hf_tokenizer(ds4_bin, model):
    tokenizers = pytest.importorskip("tokenizers")
    hf = tokenizers.Tokenizer.from_file(str(TOKENIZER))
    text = "<｜begin▁of▁sentence｜>Hello, world! 你好 <｜User｜>x"
    p = run([ds4_bin, "run", "-m", model, "-p", text, "--dump-tokens"])
    lines = p.stdout.splitlines()
    ids = json.loads(lines[0])
    assert ids == hf.encode(text, add_special_tokens=False).ids
    assert ids[0] == 0
    assert len(lines) == 1 + len(ids)
    for line, i in zip(lines[1:], ids):
        assert line[:6] == f"{i:6d}" and line[6:8] == "  "
        assert line[8:] == hf.id_to_token(i)


def test_context_limits(ds4_bin, model):
    p = run([ds4_bin, "run", "-m", model, "-p", "Hello there", *GREEDY, "--ctx", "5"], check=False)
    assert p.returncode == 1 and "but the context is 5 tokens" in p.stderr
    # The rendered prompt is ~10 tokens: room for some, not 50, generated tokens.
    q = run([ds4_bin, "run", "-m", model, "-p", "Hello there", "--nothink", "--temp", "0", "-n", "50",
             "--ctx", "40", "-t", "2"])
    assert "context full (40 tokens)" in q.stderr


@pytest.mark.parametrize("args,msg", [
    (["-m", "/nonexistent/model.gguf", "-p", "x"], "model file '/nonexistent/model.gguf' does not exist"),
    (["--temp", "200", "-p", "x"], "invalid value for --temp"),
    (["--top-p", "1.5", "-p", "x"], "invalid value for --top-p"),
    (["--seed", "0", "-p", "x"], "invalid value for --seed"),
    (["-n", "0", "-p", "x"], "invalid value for -n/--tokens"),
    (["--prompt-file", "/nonexistent/prompt.txt"], "--prompt-file /nonexistent/prompt.txt: cannot open"),
    (["-p", "x", "--prompt-file", "/etc/hostname"], "either -p or --prompt-file"),
    (["-p", "x", "--nothink", "--think-max"], "exclude each other"),
])
def test_bad_input_gives_one_clear_error(ds4_bin, model, args, msg):
    cmd = [ds4_bin, "run"] + (args if "-m" in args else ["-m", model] + args)
    p = run(cmd, check=False)
    assert p.returncode == 1, p.stderr
    assert msg in p.stderr
    assert p.stderr.count("error") == 1


def test_bad_gguf_is_an_error_not_a_crash(ds4_bin, tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 20)
    p = run([ds4_bin, "run", "-m", str(bad), "-p", "x"], check=False)
    assert p.returncode == 1 and "ds4: error:" in p.stderr


def test_think_max_downgrade_warning(ds4_bin, model):
    p = run([ds4_bin, "run", "-m", model, "-p", "x", "--think-max", "--ctx", "128", "-n", "1", "-t", "2"])
    assert "ds4: warning: --think-max needs --ctx >= 393216; ctx=128 uses normal thinking instead" in p.stderr
