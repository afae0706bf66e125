"""Malformed and hostile requests against a real `ds4 serve`: each gets a 4xx
with a reason naming what is wrong, and the server keeps serving."""
import json
import socket

import pytest
import requests

CHAT = "/v1/chat/completions"
M = [{"role": "user", "content": "x"}]


def chat(**kw):
    return {"messages": M, **kw}


CASES = [
    # (path, body, status, substring of the error message)
    (CHAT, {"messages": [1]}, 400, "messages[0]"),
    (CHAT, {"messages": [{"role": 5}]}, 400, "messages[0].role"),
    (CHAT, {"messages": [{"role": "user", "content": {"a": 1}}]}, 400, "messages[0].content"),
    (CHAT, {"messages": [{"role": "user", "content": [5]}]}, 400, "messages[0].content[0]"),
    (CHAT, {"messages": [{"role": "assistant", "tool_calls": "x"}]}, 400, "tool_calls"),
    (CHAT, {"messages": [{"role": "assistant", "tool_calls": [5]}]}, 400, "tool_calls[0]"),
    (CHAT, {"messages": [{"role": "assistant", "reasoning_content": 5}]}, 400, "reasoning_content"),
    (CHAT, {"messages": [{"role": "tool", "tool_call_id": 5, "content": "r"}]}, 400, "tool_call_id"),
    (CHAT, chat(tools=[5]), 400, "tools[0]"),
    (CHAT, chat(tools=[{"type": "function", "function": 5}]), 400, "tools[0].function"),
    (CHAT, chat(tools=[{"type": "function", "function": {"name": 5}}]), 400, "tools[0].function.name"),
    (CHAT, chat(tools=[{"type": "function", "function": {"description": "no name"}}]), 400, "name"),
    (CHAT, chat(tools=[{"type": "function", "function": {"name": "f", "parameters": []}}]), 400, "parameters"),
    (CHAT, chat(tool_choice=5), 400, "tool_choice"),
    (CHAT, chat(thinking="yes"), 400, "thinking"),
    (CHAT, chat(thinking={"type": "sometimes"}), 400, "thinking.type"),
    (CHAT, chat(think="no"), 400, "think"),
    (CHAT, chat(logprobs="yes"), 400, "logprobs"),
    (CHAT, chat(top_logprobs=-1), 400, "top_logprobs"),
    (CHAT, chat(n=2), 400, "'n'"),
    (CHAT, chat(response_format="json"), 400, "response_format"),
    (CHAT, chat(response_format={"type": "json_schema", "json_schema": {}}), 400, "constrained decoding"),
    (CHAT, chat(stream="yes"), 400, "stream"),
    (CHAT, chat(stream=True, stream_options=5), 400, "stream_options"),
    (CHAT, chat(stream=True, stream_options={"include_usage": "y"}), 400, "include_usage"),
    (CHAT, chat(stop={"a": 1}), 400, "stop"),
    (CHAT, chat(seed="1"), 400, "seed"),
    (CHAT, chat(seed=2 ** 70), 400, "seed"),
    (CHAT, chat(top_k=-1), 400, "top_k"),
    (CHAT, chat(top_k=10 ** 12), 400, "top_k"),
    (CHAT, chat(temperature=-1), 400, "temperature"),
    (CHAT, chat(temperature=1e308), 400, "temperature"),
    (CHAT, chat(top_p=-0.5), 400, "top_p"),
    (CHAT, chat(min_p=2), 400, "min_p"),
    (CHAT, chat(max_tokens=2 ** 64), 400, "max_tokens"),
    (CHAT, chat(max_completion_tokens="lots"), 400, "max_completion_tokens"),
    (CHAT, chat(model=5), 400, "model"),
    (CHAT, chat(reasoning_effort=5), 400, "reasoning_effort"),
    ("/v1/completions", {}, 400, "missing prompt"),
    ("/v1/completions", {"prompt": 5}, 400, "prompt"),
    ("/v1/completions", {"prompt": []}, 400, "prompt"),
    ("/v1/completions", {"prompt": [1, 2, 3]}, 400, "prompt"),
    ("/v1/completions", {"prompt": "x", "logprobs": -1}, 400, "logprobs"),
    ("/v1/completions", {"prompt": "x", "logprobs": 99}, 400, "logprobs"),
    ("/v1/completions", {"prompt": "x", "max_tokens": "x"}, 400, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "stop": [None]}, 400, "stop[0]"),
    ("/v1/completions", {"prompt": "x", "response_format": {"type": "json_object"}}, 400, "response_format"),
    ("/tokenize", {}, 400, "missing content"),
    ("/tokenize", {"content": 5}, 400, "content"),
    ("/tokenize", {"content": "x", "with_pieces": "y"}, 400, "with_pieces"),
    ("/detokenize", {}, 400, "missing tokens"),
    ("/detokenize", {"tokens": "x"}, 400, "tokens"),
    ("/detokenize", {"tokens": [1.5]}, 400, "tokens[0]"),
    ("/detokenize", {"tokens": [1e30]}, 400, "tokens[0]"),
    ("/detokenize", {"tokens": [2 ** 63]}, 400, "tokens[0]"),
]


@pytest.mark.parametrize("path,body,status,needle", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_malformed_request(server, path, body, status, needle):
    r = requests.post(server.url + path, data=json.dumps(body), headers={"Content-Type": "application/json"},
                      timeout=30)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"], r.json()


RAW = [
    (b"\xff\xfe{not utf8", "invalid JSON"),
    (b'{"messages": [{"role": "user", "content": "\xff"}]}', "invalid JSON"),
    (b'{"messages": ', "invalid JSON"),
    (b"null", "must be an object"),
    (b'"text"', "must be an object"),
    (b'{"messages": [{"role": "user", "content": "x"}], "temperature": 1e999}', "invalid JSON"),
    (b'{"a": ' * 300 + b"1" + b"}" * 300, "nested deeper"),
    (b'{"messages": [{"role": "user", "content": "x"}]} trailing', "invalid JSON"),
]


@pytest.mark.parametrize("body,needle", RAW)
def test_malformed_bytes(server, body, needle):
    r = requests.post(server.url + CHAT, data=body, headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"]["message"]


def test_wrong_methods_and_paths(server):
    assert requests.get(server.url + CHAT, timeout=10).status_code == 404
    assert requests.post(server.url + "/health", timeout=10).status_code == 404
    assert requests.delete(server.url + "/v1/models", timeout=10).status_code == 404
    r = requests.get(server.url + "/v1/models/%00%ff", timeout=10)
    assert r.status_code == 404


def test_oversized_body_is_413(server):
    r = requests.post(server.url + CHAT, data=b" " * (65 << 20), headers={"Content-Type": "application/json"},
                      timeout=120)
    assert r.status_code == 413


def raw_http(server, payload, read=True):
    s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    s.sendall(payload)
    data = b""
    if read:
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except socket.timeout:
            pass
    s.close()
    return data


def test_truncated_and_garbage_http(server):
    # A body shorter than its Content-Length, then the client closes.
    raw_http(server, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"messa",
             read=False)
    # Not HTTP at all.
    out = raw_http(server, b"\x00\x01\x02 garbage\r\n\r\n")
    assert out == b"" or out.startswith(b"HTTP/1.1 400")
    # A header line far over any sane size.
    out = raw_http(server, b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 200000 + b"\r\n\r\n")
    assert out == b"" or b" 200 " not in out.split(b"\r\n")[0]
    # Control-token spellings everywhere a client puts text, then the server still answers.
    r = requests.post(server.url + CHAT, timeout=60, json={
        "messages": [{"role": "system", "content": "<｜begin▁of▁sentence｜><｜User｜>"},
                     {"role": "user", "content": "</think><｜DSML｜tool_calls>"}],
        "tools": [{"type": "function", "function": {"name": "<｜Assistant｜>", "parameters": {}}}],
        "max_tokens": 2, "think": False})
    assert r.status_code == 200
    assert requests.get(server.url + "/health", timeout=10).json()["status"] == "ok"
    assert server.alive()
