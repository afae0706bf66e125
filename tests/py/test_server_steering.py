"""Steering through ds4 serve (docs/steering.md): --dir-steering-* set the
server's scales, `ds4_steering` overrides them per request and is reported
back, requests with different scales decoding together each equal their run
alone, a slot's state is never reused across different scales, and a scale
without loaded directions is a 400.

Named direction sets (--dir-steering-vector NAME=FILE, chosen per request with
ds4_steering.vector): each changes the reply and two differ, requests using
different sets in one batch equal each alone, no reuse across sets, a set
named without scales takes its metadata's recommended ones, the steering is
reported in the OpenAI chat, Anthropic and Responses replies (through the
official SDKs, streamed and not), unknown names are a 400 listing the known
ones, and a file path in a request is refused. numpy builds the sets: a set
and its negation, or twice it at a quarter of the scales, must steer bit for
bit alike, as y - s d (d.y) says."""
import concurrent.futures as cf
import json

import anthropic
import gguf
import numpy as np
import openai
import pytest
import requests

from conftest import run

MODEL = "deepseek-v4-flash"


@pytest.fixture(scope="module")
def shape(demo_model_path):
    r = gguf.GGUFReader(demo_model_path)  # read with gguf-py, not ds4
    get = lambda k: int(r.fields[k].parts[r.fields[k].data[0]][0])
    return get("deepseek4.block_count"), get("deepseek4.embedding_length")


def unit_dirs(shape, seed):
    d = np.random.default_rng(seed).standard_normal(shape)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return d.astype("<f4")


@pytest.fixture(scope="module")
def dirs(shape, tmp_path_factory):
    path = tmp_path_factory.mktemp("steer") / "dirs.f32"
    unit_dirs(shape, 3).tofile(path)
    return str(path)


@pytest.fixture(scope="module")
def vectors(shape, tmp_path_factory):
    """Named sets: a (its .json recommends ffn -2), b (no .json), and two made
    from a with numpy: its negation and twice it (not unit length)."""
    d = tmp_path_factory.mktemp("vectors")
    a, b = unit_dirs(shape, 4), unit_dirs(shape, 5)
    files = {"a": a, "b": b, "a_neg": -a, "a_twice": a * np.float32(2)}
    for name, v in files.items():
        v.astype("<f4").tofile(d / f"{name}.f32")
    (d / "a.json").write_text(json.dumps({"format": "ds4-directional-steering-v1", "shape": list(shape),
                                          "component": "ffn", "recommended_scales": {"ffn": -2.0}}))
    return {name: str(d / f"{name}.f32") for name in files}


@pytest.fixture(scope="module")
def named(start_server, dirs, vectors):
    flags = [x for name in vectors for x in ("--dir-steering-vector", f"{name}={vectors[name]}")]
    return start_server("--dir-steering-file", dirs, *flags, ctx=2048, parallel=4)


@pytest.fixture(scope="module")
def steered(start_server, dirs):
    # The file alone: FFN scale 1 for every request that does not say otherwise.
    return start_server("--dir-steering-file", dirs, ctx=2048, parallel=4)


def chat(url, content, steering=None, n=12, logprobs=False):
    body = {"model": "x", "messages": [{"role": "user", "content": content}], "max_tokens": n,
            "temperature": 0, "thinking": {"type": "disabled"}}
    if logprobs:
        body["logprobs"] = True
    if steering is not None:
        body["ds4_steering"] = steering
    r = requests.post(url + "/v1/chat/completions", json=body, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


def reply(url, content, steering=None):
    """A greedy reply as (text, logprob of every token): equal only when the
    logits were (a different steering changes the logprobs even where the
    random model's greedy text happens to agree)."""
    r = chat(url, content, steering, logprobs=True)
    c = r["choices"][0]
    return c["message"]["content"], tuple(t["logprob"] for t in c["logprobs"]["content"])


def test_scales_change_the_reply_and_are_reported(steered):
    default = chat(steered.url, "Tell me about rivers.")
    assert default["ds4_steering"] == {"vector": "default", "ffn": 1.0, "attn": 0.0}
    off = chat(steered.url, "Tell me about rivers.", {"ffn": 0})
    assert off.get("ds4_steering") is None
    strong = chat(steered.url, "Tell me about rivers.", {"ffn": -3, "attn": 2})
    assert strong["ds4_steering"] == {"vector": "default", "ffn": -3.0, "attn": 2.0}
    texts = {default["choices"][0]["message"]["content"], off["choices"][0]["message"]["content"],
             strong["choices"][0]["message"]["content"]}
    assert len(texts) == 3, texts  # three scales, three different greedy replies


def test_mixed_scales_in_one_batch_equal_each_alone(steered):
    scales = [{"ffn": 0}, {"ffn": 1}, {"ffn": -2}, {"attn": 1.5}]
    prompts = [f"Question {i}: name a colour." for i in range(4)]
    alone = [chat(steered.url, p, s)["choices"][0]["message"]["content"] for p, s in zip(prompts, scales)]
    with cf.ThreadPoolExecutor(4) as ex:
        together = list(ex.map(lambda a: chat(steered.url, *a)["choices"][0]["message"]["content"],
                               zip(prompts, scales)))
    assert together == alone


OPENING = "A long shared opening about mountains and their geology."


def follow_up(url, first, steering):
    """The conversation's second turn after `first` (the reply to OPENING),
    with these scales; returns the prompt tokens reused."""
    msgs = [{"role": "user", "content": OPENING},
            {"role": "assistant", "content": first["choices"][0]["message"]["content"]},
            {"role": "user", "content": "And rivers?"}]
    r = requests.post(url + "/v1/chat/completions", timeout=300, json={
        "model": "x", "messages": msgs, "max_tokens": 4, "temperature": 0,
        "thinking": {"type": "disabled"}, "ds4_steering": steering})
    assert r.status_code == 200, r.text
    return r.json()["usage"]["prompt_tokens_details"]["cached_tokens"]


def test_no_reuse_across_scales(steered):
    first = chat(steered.url, OPENING, {"ffn": 0.5})
    assert follow_up(steered.url, first, {"ffn": 0.25}) == 0  # other scales: the slot's state is not reused
    chat(steered.url, OPENING, {"ffn": 0.5})
    assert follow_up(steered.url, first, {"ffn": 0.5}) > 0    # same scales: it is


LONG_OPENING = "A long shared opening about mountains and their geology. " + " ".join(
    f"Peak {i} rises above the valley." for i in range(40))


def test_steered_conversations_use_the_prefix_cache(start_server, dirs):
    """A steered conversation's state goes to the prefix cache under its
    steering (scales and directions) and comes back for the same steering
    only: with one slot, another conversation pushes the first out (stored on
    eviction), and the first's next turn then starts from the cache, while
    the same turn with other scales finds nothing."""
    srv = start_server("--dir-steering-file", dirs, "--cache-ram-mb", "256", "--kv-cache-min-tokens", "64",
                       "--kv-cache-block-tokens", "32", ctx=2048, parallel=1)

    def turn(steering):
        msgs = [{"role": "user", "content": LONG_OPENING},
                {"role": "assistant", "content": first["choices"][0]["message"]["content"]},
                {"role": "user", "content": "And rivers?"}]
        r = requests.post(srv.url + "/v1/chat/completions", timeout=300, json={
            "model": "x", "messages": msgs, "max_tokens": 4, "temperature": 0,
            "thinking": {"type": "disabled"}, "ds4_steering": steering})
        assert r.status_code == 200, r.text
        return r.json()["usage"]["prompt_tokens_details"]["cached_tokens"]

    first = chat(srv.url, LONG_OPENING, {"ffn": 0.5})
    n_first = first["usage"]["prompt_tokens"] + first["usage"]["completion_tokens"]
    chat(srv.url, "Something else entirely: name a colour.", {"ffn": 0.5})  # takes the only slot
    assert turn({"ffn": 0.25}) == 0  # other scales: a miss
    chat(srv.url, "Something else again: name a fruit.", {"ffn": 0.5})
    cached = turn({"ffn": 0.5})
    assert cached >= 64 and cached <= n_first, (cached, n_first)
    log = "".join(srv.log)
    assert "from=ram" in log and "prefix cache not used with steering" not in log


@pytest.mark.parametrize("bad", [{"ffn": "x"}, {"ffn": 1e9}, "strong", [1, 2]])
def test_bad_steering_field_is_a_400(steered, bad):
    r = requests.post(steered.url + "/v1/chat/completions", timeout=60, json={
        "model": "x", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "ds4_steering": bad})
    assert r.status_code == 400, r.text
    assert "ds4_steering" in r.text


def test_scale_without_file_is_a_400(server):
    r = requests.post(server.url + "/v1/chat/completions", timeout=60, json={
        "model": "x", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "ds4_steering": {"ffn": 1}})
    assert r.status_code == 400 and "--dir-steering-file" in r.text, r.text
    # Zero scales are the normal path and need no file.
    r = requests.post(server.url + "/v1/chat/completions", timeout=60, json={
        "model": "x", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "ds4_steering": {"ffn": 0}})
    assert r.status_code == 200, r.text


# ---- named direction sets ---------------------------------------------------

STRONG = {"ffn": -3, "attn": 2}


def post(server, api, steering):
    """A one-token request to `api` with this ds4_steering."""
    path, body = {
        "chat": ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}),
        "messages": ("/v1/messages", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}),
        "responses": ("/v1/responses", {"input": "hi", "max_output_tokens": 1}),
        "completions": ("/v1/completions", {"prompt": "hi", "max_tokens": 1}),
    }[api]
    return requests.post(server.url + path, timeout=60, json={"model": MODEL, **body, "ds4_steering": steering})


def test_each_vector_changes_the_reply_and_the_two_differ(named):
    p = "Tell me about rivers."
    none = reply(named.url, p, {"ffn": 0})
    a = reply(named.url, p, {"vector": "a", **STRONG})
    b = reply(named.url, p, {"vector": "b", **STRONG})
    default = reply(named.url, p, STRONG)  # no vector: the --dir-steering-file set
    assert none != a and none != b and a != b and default not in (a, b), (none, a, b, default)
    assert reply(named.url, p, {"vector": "default", **STRONG}) == default


def test_mixed_vectors_in_one_batch_equal_each_alone(named):
    asks = [{"vector": "a", **STRONG}, {"vector": "b", **STRONG}, STRONG, {"ffn": 0}]
    prompts = [f"Question {i}: name a colour." for i in range(len(asks))]
    alone = [reply(named.url, p, s) for p, s in zip(prompts, asks)]
    with cf.ThreadPoolExecutor(len(asks)) as ex:
        together = list(ex.map(lambda a: reply(named.url, *a), zip(prompts, asks)))
    assert together == alone
    # The same pair of prompts with the vectors swapped: each equals its own run alone.
    swapped = [{"vector": "b", **STRONG}, {"vector": "a", **STRONG}]
    with cf.ThreadPoolExecutor(2) as ex:
        together = list(ex.map(lambda a: reply(named.url, *a), zip(prompts, swapped)))
    assert together == [reply(named.url, p, s) for p, s in zip(prompts, swapped)]
    assert together[0] != alone[0] and together[1] != alone[1]


def test_no_reuse_across_vectors(named):
    first = chat(named.url, OPENING, {"vector": "a", "ffn": 0.5})
    assert follow_up(named.url, first, {"vector": "b", "ffn": 0.5}) == 0  # same scales, other set: not reused
    chat(named.url, OPENING, {"vector": "a", "ffn": 0.5})
    assert follow_up(named.url, first, {"vector": "a", "ffn": 0.5}) > 0   # same set and scales: reused


def test_numpy_built_vectors_steer_as_the_projection_says(named):
    # y - s d (d.y) is even in d and grows with |d|^2: -a steers exactly as a
    # does, and 2a at a quarter of the scales too (powers of two are exact in
    # float). A server that used another set, or the vector linearly, fails.
    p = "Describe a quiet harbour at dawn."
    base = reply(named.url, p, {"vector": "a", **STRONG})
    assert reply(named.url, p, {"vector": "a_neg", **STRONG}) == base
    assert reply(named.url, p, {"vector": "a_twice", "ffn": -0.75, "attn": 0.5}) == base
    assert reply(named.url, p, {"vector": "a_twice", **STRONG}) != base


def test_vector_without_scales_takes_its_recommended_ones(named):
    p = "Tell me about lakes."
    r = chat(named.url, p, {"vector": "a"})
    assert r["ds4_steering"] == {"vector": "a", "ffn": -2.0, "attn": 0.0}  # from a.json
    assert reply(named.url, p, {"vector": "a"}) == reply(named.url, p, {"vector": "a", "ffn": -2})
    # default: the server's own scales (--dir-steering-file alone: ffn 1).
    assert chat(named.url, p, {"vector": "default"})["ds4_steering"] == {"vector": "default", "ffn": 1.0, "attn": 0.0}
    assert chat(named.url, p)["ds4_steering"] == {"vector": "default", "ffn": 1.0, "attn": 0.0}
    # A zero scale on a named set is the plain path: unsteered, reported as such.
    assert chat(named.url, p, {"vector": "a", "ffn": 0})["ds4_steering"] is None
    # b records none: the request must say.
    r = post(named, "chat", {"vector": "b"})
    assert r.status_code == 400 and "'b' records no recommended scales" in r.text, r.text


def test_steering_is_reported_in_every_reply_shape(named):
    want = {"vector": "b", "ffn": -3.0, "attn": 2.0}
    ext = {"ds4_steering": {"vector": "b", **STRONG}}
    msgs = [{"role": "user", "content": "Hi."}]
    oc = openai.OpenAI(base_url=named.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    ac = anthropic.Anthropic(base_url=named.url, api_key="unused", max_retries=0, timeout=120)

    # OpenAI chat: the reply; streamed, the finish chunk and the usage chunk.
    r = oc.chat.completions.create(model=MODEL, messages=msgs, max_tokens=3, extra_body=ext)
    assert r.model_extra["ds4_steering"] == want
    chunks = list(oc.chat.completions.create(model=MODEL, messages=msgs, max_tokens=3, stream=True,
                                             stream_options={"include_usage": True}, extra_body=ext))
    reported = [c.model_extra["ds4_steering"] for c in chunks if "ds4_steering" in (c.model_extra or {})]
    assert reported == [want, want], reported
    assert chunks[-1].usage is not None

    # Anthropic Messages: the message; streamed, message_start's message, which
    # the SDK's accumulated final message keeps.
    m = ac.messages.create(model=MODEL, max_tokens=3, messages=msgs, extra_body=ext)
    assert m.model_extra["ds4_steering"] == want
    with ac.messages.stream(model=MODEL, max_tokens=3, messages=msgs, extra_body=ext) as s:
        events = list(s)
        final = s.get_final_message()
    assert events[0].type == "message_start" and events[0].message.model_extra["ds4_steering"] == want
    assert final.model_extra["ds4_steering"] == want

    # Responses: the response object, streamed in every lifecycle event's response.
    rr = oc.responses.create(model=MODEL, input="Hi.", max_output_tokens=3, extra_body=ext)
    assert rr.model_extra["ds4_steering"] == want
    events = list(oc.responses.create(model=MODEL, input="Hi.", max_output_tokens=3, stream=True, extra_body=ext))
    lifecycle = [e for e in events if hasattr(e, "response")]
    assert [e.type for e in lifecycle][:2] == ["response.created", "response.in_progress"]
    assert lifecycle[-1].type in ("response.completed", "response.incomplete")
    assert all(e.response.model_extra["ds4_steering"] == want for e in lifecycle)

    # Unsteered: null in each.
    off = {"ds4_steering": {"vector": "b", "ffn": 0}}
    assert oc.chat.completions.create(model=MODEL, messages=msgs, max_tokens=1,
                                      extra_body=off).model_extra["ds4_steering"] is None
    assert ac.messages.create(model=MODEL, max_tokens=1, messages=msgs, extra_body=off).model_extra["ds4_steering"] is None
    assert oc.responses.create(model=MODEL, input="Hi.", max_output_tokens=1,
                               extra_body=off).model_extra["ds4_steering"] is None
    # Legacy completions report it too.
    assert post(named, "completions", {"vector": "a", "ffn": 0.5}).json()["ds4_steering"] == \
        {"vector": "a", "ffn": 0.5, "attn": 0.0}


@pytest.mark.parametrize("api", ["chat", "messages", "responses", "completions"])
def test_unknown_vector_is_a_400_listing_the_names(named, vectors, api):
    # A path to a real vector file is only an unknown name: requests never make the server read files.
    for name in ["nope", vectors["b"]]:
        r = post(named, api, {"vector": name, "ffn": 1})
        assert r.status_code == 400, r.text
        assert "ds4_steering.vector" in r.text and "unknown steering vector" in r.text, r.text
        assert "known: default, a, b, a_neg, a_twice" in r.text, r.text
    r = post(named, api, {"vector": 7})
    assert r.status_code == 400 and "ds4_steering.vector" in r.text, r.text


@pytest.mark.parametrize("bad,field", [({"file": "/etc/passwd"}, "ds4_steering.file"),
                                       ({"vector": "a", "path": "b.f32", "ffn": 1}, "ds4_steering.path"),
                                       ({"dir_steering_file": "b.f32"}, "ds4_steering.dir_steering_file")])
def test_a_file_in_the_request_is_refused(named, bad, field):
    r = post(named, "chat", bad)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == field
    assert "cannot make the server read a file" in r.text and "--dir-steering-vector" in r.text, r.text


def test_unknown_key_and_server_without_vectors(named, steered, server):
    r = post(named, "chat", {"vectr": "a", "ffn": 1})
    assert r.status_code == 400 and "'ds4_steering.vectr' is not supported" in r.text, r.text
    # A server with only --dir-steering-file knows "default" alone; one with no steering, nothing.
    r = post(steered, "chat", {"vector": "a", "ffn": 1})
    assert r.status_code == 400 and "(known: default)" in r.text, r.text
    r = post(server, "messages", {"vector": "a", "ffn": 1})
    assert r.status_code == 400 and "has no steering vectors" in r.text, r.text
    assert r.json()["type"] == "error"  # in the API's own error shape


def test_bad_vector_flags_stop_the_server(ds4_bin, demo_model_path, dirs, shape, tmp_path):
    short = tmp_path / "short.f32"
    np.zeros(shape[0] * shape[1] - 1, "<f4").tofile(short)
    odd = tmp_path / "odd.f32"
    unit_dirs(shape, 6).tofile(odd)
    (tmp_path / "odd.json").write_text(json.dumps({"recommended_scales": {"ffn": "strong"}}))
    cases = [([f"default={dirs}"], "'default'"),
             ([f"x={short}"], "needs exactly"),
             ([f"x={dirs}", f"x={dirs}"], "'x' is given twice"),
             ([dirs], "expected NAME=FILE"),
             ([f"x/y={dirs}"], "steering vector name 'x/y'"),
             ([f"x={odd}"], "recommended_scales")]
    for values, msg in cases:
        flags = [x for v in values for x in ("--dir-steering-vector", v)]
        p = run([ds4_bin, "serve", "-m", demo_model_path, "--port", "0", "-t", "1", *flags], check=False, timeout=120)
        assert p.returncode != 0 and msg in p.stderr, (values, p.stderr)
