"""Steering through ds4 serve (docs/steering.md): --dir-steering-* set the
server's scales, `ds4_steering` overrides them per request and is reported
back, requests with different scales decoding together each equal their run
alone, a slot's state is never reused across different scales, and a scale
without loaded directions is a 400."""
import concurrent.futures as cf

import gguf
import numpy as np
import pytest
import requests


@pytest.fixture(scope="module")
def dirs(demo_model_path, tmp_path_factory):
    r = gguf.GGUFReader(demo_model_path)
    get = lambda k: int(r.fields[k].parts[r.fields[k].data[0]][0])
    L, D = get("deepseek4.block_count"), get("deepseek4.embedding_length")
    d = np.random.default_rng(3).standard_normal((L, D))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    path = tmp_path_factory.mktemp("steer") / "dirs.f32"
    d.astype("<f4").tofile(path)
    return str(path)


@pytest.fixture(scope="module")
def steered(start_server, dirs):
    # The file alone: FFN scale 1 for every request that does not say otherwise.
    return start_server("--dir-steering-file", dirs, ctx=2048, parallel=4)


def chat(url, content, steering=None, n=12):
    body = {"model": "x", "messages": [{"role": "user", "content": content}], "max_tokens": n,
            "temperature": 0, "thinking": {"type": "disabled"}}
    if steering is not None:
        body["ds4_steering"] = steering
    r = requests.post(url + "/v1/chat/completions", json=body, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


def test_scales_change_the_reply_and_are_reported(steered):
    default = chat(steered.url, "Tell me about rivers.")
    assert default["ds4_steering"] == {"ffn": 1.0, "attn": 0.0}
    off = chat(steered.url, "Tell me about rivers.", {"ffn": 0})
    assert off.get("ds4_steering") is None
    strong = chat(steered.url, "Tell me about rivers.", {"ffn": -3, "attn": 2})
    assert strong["ds4_steering"] == {"ffn": -3.0, "attn": 2.0}
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


def test_no_reuse_across_scales(steered):
    first = chat(steered.url, "A long shared opening about mountains and their geology.", {"ffn": 0.5})
    msgs = [{"role": "user", "content": "A long shared opening about mountains and their geology."},
            {"role": "assistant", "content": first["choices"][0]["message"]["content"]},
            {"role": "user", "content": "And rivers?"}]
    def follow(steering):
        r = requests.post(steered.url + "/v1/chat/completions", timeout=300, json={
            "model": "x", "messages": msgs, "max_tokens": 4, "temperature": 0,
            "thinking": {"type": "disabled"}, "ds4_steering": steering})
        assert r.status_code == 200, r.text
        return r.json()["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert follow({"ffn": 0.25}) == 0       # other scales: the slot's state is not reused
    chat(steered.url, "A long shared opening about mountains and their geology.", {"ffn": 0.5})
    assert follow({"ffn": 0.5}) > 0          # same scales: it is


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
