"""`ds4 run --save-session F` / `--load-session F`: a run that resumes a saved
session prints exactly what one uninterrupted run prints (text and every
logit of a greedy continuation), prefills only the tokens after the saved
ones, and bad files or prompts fail with one clear error."""
import json

import pytest

from conftest import run
from test_run import make_model

BOS, USER, ASSISTANT, THINK_CLOSE = "<｜begin▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "</think>"
# Pre-rendered prompts (reference-behavior §2.3): tokenized as written. HEAD
# ends right before a special token, so its tokens begin FULL's.
HEAD = BOS + "You are a careful assistant." + USER + "Explain in one sentence why caches make agents fast"
FULL = HEAD + ASSISTANT + THINK_CLOSE
GREEDY = ["--nothink", "--temp", "0", "-t", "2", "--ctx", "2048"]


@pytest.fixture(scope="module")
def model(ds4_bin, tmp_path_factory):
    return make_model(ds4_bin, tmp_path_factory)


def ds4(ds4_bin, model, prompt, *extra, check=True):
    return run([ds4_bin, "run", "-m", model, "-p", prompt, *GREEDY, *extra], check=check)


def token_ids(ds4_bin, model, prompt):
    out = run([ds4_bin, "run", "-m", model, "-p", prompt, "--dump-tokens"]).stdout
    return json.loads(out.splitlines()[0])


def test_resumed_run_equals_uninterrupted_run(ds4_bin, model, tmp_path):
    head_ids, full_ids = token_ids(ds4_bin, model, HEAD), token_ids(ds4_bin, model, FULL)
    assert full_ids[: len(head_ids)] == head_ids and len(full_ids) > len(head_ids)

    saved = tmp_path / "head.ckpt"
    # -n 1 samples one token and never feeds it: the session holds HEAD exactly.
    a = ds4(ds4_bin, model, HEAD, "-n", "1", "--save-session", str(saved))
    assert f"saved {len(head_ids)} tokens to {saved}" in a.stderr
    assert saved.stat().st_size > 0

    whole_dump, resumed_dump = tmp_path / "whole.json", tmp_path / "resumed.json"
    whole = ds4(ds4_bin, model, FULL, "-n", "12", "--dump-logprobs", str(whole_dump))
    resumed = ds4(ds4_bin, model, FULL, "-n", "12", "--dump-logprobs", str(resumed_dump), "--load-session", str(saved))
    rest = len(full_ids) - len(head_ids)
    assert (f"loaded {len(head_ids)} tokens from {saved}; prefilling the remaining {rest} of {len(full_ids)}"
            in resumed.stderr), resumed.stderr
    w, r = json.loads(whole_dump.read_text()), json.loads(resumed_dump.read_text())
    assert len(w["steps"]) == 12
    assert r == w  # every selected token and logit, bit for bit as printed
    assert "loaded" not in whole.stderr

    # The generated text too, in normal (non-dump) mode.
    plain_whole = ds4(ds4_bin, model, FULL, "-n", "12")
    plain_resumed = ds4(ds4_bin, model, FULL, "-n", "12", "--load-session", str(saved))
    assert plain_resumed.stdout == plain_whole.stdout and plain_whole.stdout.strip()


def test_saved_session_includes_generated_tokens(ds4_bin, model, tmp_path):
    saved = tmp_path / "after.ckpt"
    full_ids = token_ids(ds4_bin, model, FULL)
    r = ds4(ds4_bin, model, FULL, "-n", "6", "--save-session", str(saved))
    # The last sampled token is never fed, so the session holds 5 of the 6.
    assert f"saved {len(full_ids) + 5} tokens to {saved}" in r.stderr, r.stderr


def test_bad_loads_fail_with_one_clear_error(ds4_bin, model, tmp_path):
    saved = tmp_path / "head.ckpt"
    ds4(ds4_bin, model, HEAD, "-n", "1", "--save-session", str(saved))

    def err(*args):
        p = ds4(ds4_bin, model, *args, check=False)
        assert p.returncode != 0 and not p.stdout, p.stdout
        assert "Traceback" not in p.stderr and "terminate" not in p.stderr
        return p.stderr

    other = BOS + "Something else entirely." + USER + "Hi" + ASSISTANT + THINK_CLOSE
    assert "not a prefix of this prompt" in err(other, "-n", "2", "--load-session", str(saved))
    assert "holds the whole prompt" in err(HEAD, "-n", "2", "--load-session", str(saved))
    assert "made for another model: numerics faithful (this run uses exact)" in err(
        FULL, "-n", "2", "--numerics", "exact", "--load-session", str(saved))
    assert "file vanished" in err(FULL, "-n", "2", "--load-session", str(tmp_path / "missing.ckpt"))

    data = bytearray(saved.read_bytes())
    bad = tmp_path / "bad.ckpt"
    data[-3] ^= 0x40
    bad.write_bytes(bytes(data))
    msg = err(FULL, "-n", "2", "--load-session", str(bad))
    assert f"checkpoint {bad}: payload checksum mismatch" in msg
    bad.write_bytes(bytes(data[:1000]))
    assert "truncated" in err(FULL, "-n", "2", "--load-session", str(bad))

    nowhere = tmp_path / "no-such-dir" / "x.ckpt"
    assert str(nowhere) in err(FULL, "-n", "1", "--save-session", str(nowhere))
    p = run([ds4_bin, "run", "-m", model, "--save-session", str(saved)], check=False, input="")
    assert p.returncode != 0 and "need a prompt" in p.stderr
