"""Every field of a valid Anthropic / Responses request, one at a time, replaced
by a value of each other JSON type: the server answers 200 (the field is
optional or lenient) or a 400 in the API's error shape that names the field,
and never a 5xx; it stays up throughout."""
import copy

import pytest
import requests

ANTHROPIC = {
    "model": "deepseek-v4-flash", "max_tokens": 1, "stream": False,
    "system": [{"type": "text", "text": "x-anthropic-billing-header: a"}, {"type": "text", "text": "Be brief."}],
    "thinking": {"type": "disabled"}, "stop_sequences": ["zz"], "tool_choice": {"type": "auto"},
    "tools": [{"name": "f", "description": "d", "input_schema": {"type": "object", "properties": {}}}],
    "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": "s"},
                                          {"type": "text", "text": "a"},
                                          {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"k": 1}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "r"},
                                     {"type": "text", "text": "go on"}]},
    ],
}
RESPONSES = {
    "model": "deepseek-v4-flash", "max_output_tokens": 1, "stream": False, "instructions": "Be brief.",
    "reasoning": {"effort": "none", "summary": "auto"}, "tool_choice": "auto",
    "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}},
              {"type": "custom", "name": "p", "format": {"type": "grammar", "syntax": "lark", "definition": "s"}}],
    "input": [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "t"}]},
        {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "r"},
        {"type": "custom_tool_call", "call_id": "call_2", "name": "p", "input": "x"},
        {"type": "custom_tool_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "ok"}]},
    ],
}
OTHERS = [None, True, -1, 1e300, "s", [], [1, "x"], {}, {"type": 5}]


def paths(v, prefix=()):
    yield prefix
    if isinstance(v, dict):
        for k, x in v.items():
            yield from paths(x, prefix + (k,))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            yield from paths(x, prefix + (i,))


def replaced(body, path, value):
    b = copy.deepcopy(body)
    if not path:
        return value
    t = b
    for k in path[:-1]:
        t = t[k]
    t[path[-1]] = value
    return b


@pytest.mark.parametrize("endpoint,body", [("/v1/messages", ANTHROPIC), ("/v1/responses", RESPONSES)])
def test_every_field_of_every_type(server, endpoint, body):
    assert requests.post(server.url + endpoint, json=body, timeout=60).status_code == 200
    n = 0
    for path in paths(body):
        if path == ("stream",):
            continue  # a streamed answer is a different response, tested elsewhere
        for value in OTHERS:
            if value is None and path in (("max_tokens",), ("max_output_tokens",)):
                continue  # null is "not given": the server's default limit, a long generation
            r = requests.post(server.url + endpoint, json=replaced(body, path, value), timeout=60)
            n += 1
            assert r.status_code in (200, 400), (path, value, r.status_code, r.text)
            if r.status_code == 400:
                j = r.json()
                if endpoint == "/v1/messages":
                    assert j["type"] == "error" and j["error"]["type"] == "invalid_request_error", j
                    assert j["error"]["message"]
                else:
                    assert j["error"]["type"] == "invalid_request_error" and j["error"]["message"], j
    assert n > 300
    assert requests.get(server.url + "/health", timeout=10).status_code == 200
