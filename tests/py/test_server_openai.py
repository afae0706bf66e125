"""`ds4 serve`'s OpenAI side, driven by the official `openai` Python SDK (the
oracle of the wire format) and by raw HTTP for the rest. The model has random
weights, so tests compare the server with itself (streamed == not streamed,
batched == alone, reused prefix == cold start) or force the reply with the
--test-script hook, never against expected prose."""
import json
import threading
import time

import openai
import pytest
import requests

DSML_REPLY = (
    "Let me check the weather.</think>\n\n<｜DSML｜tool_calls>\n"
    '<｜DSML｜invoke name="get_weather">\n'
    '<｜DSML｜parameter name="city" string="true">Paris</｜DSML｜parameter>\n'
    '<｜DSML｜parameter name="days" string="false">3</｜DSML｜parameter>\n'
    "</｜DSML｜invoke>\n</｜DSML｜tool_calls>"
)
TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather forecast for a city",
        "parameters": {"type": "object",
                       "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                       "required": ["city"]},
    },
}]


def client(server, key="unused"):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=120)


def greedy_chat(c, text, **kw):
    return c.chat.completions.create(model="deepseek-v4-flash", messages=[{"role": "user", "content": text}],
                                     temperature=0, extra_body={"think": False}, **kw)


def stream_text(chunks):
    """Concatenated content of a streamed chat, and the finish reason / usage."""
    content, finish, usage, roles = "", None, None, []
    for ch in chunks:
        if ch.usage is not None:
            usage = ch.usage
        for c in ch.choices:
            if c.delta.role:
                roles.append(c.delta.role)
            content += c.delta.content or ""
            if c.finish_reason:
                finish = c.finish_reason
    return content, finish, usage, roles


# ---- basic endpoints --------------------------------------------------------

def test_health_models_and_unknown_paths(server):
    h = requests.get(server.url + "/health", timeout=10)
    assert h.status_code == 200 and h.json()["status"] == "ok"
    models = client(server).models.list()
    assert [m.id for m in models.data] == ["deepseek-v4-flash"]
    m = client(server).models.retrieve("deepseek-v4-flash")
    assert m.id == "deepseek-v4-flash"
    assert requests.get(server.url + "/v1/models/deepseek-v4-flash", timeout=10).json()["context_length"] == 4096
    with pytest.raises(openai.NotFoundError):
        client(server).models.retrieve("gpt-4")
    r = requests.get(server.url + "/nope", timeout=10)
    assert r.status_code == 404 and r.json()["error"]["message"] == "unknown endpoint"
    assert r.headers["Connection"] == "close"


def test_tokenize_detokenize_roundtrip(server):
    text = "Hello, wörld! 你好 <｜User｜> </think>"
    r = requests.post(server.url + "/tokenize", json={"content": text}, timeout=10)
    assert r.status_code == 200
    toks = r.json()["tokens"]
    assert all(isinstance(t, int) for t in toks)
    back = requests.post(server.url + "/detokenize", json={"tokens": toks}, timeout=10).json()["content"]
    assert back == text
    # Special-token spellings in user text are plain text: several tokens each.
    user = requests.post(server.url + "/tokenize", json={"content": "<｜User｜>"}, timeout=10).json()["tokens"]
    assert len(user) > 1
    bad = requests.post(server.url + "/detokenize", json={"tokens": [1, -5]}, timeout=10)
    assert bad.status_code == 400 and "tokens[1]" in bad.json()["error"]["message"]


# ---- chat completions ---------------------------------------------------------

def test_chat_nonstream_and_stream_agree(server):
    c = client(server)
    r = greedy_chat(c, "Tell me a story.", max_tokens=16)
    ch = r.choices[0]
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert ch.message.role == "assistant" and isinstance(ch.message.content, str)
    assert ch.finish_reason in ("stop", "length")
    u = r.usage
    assert u.prompt_tokens > 0 and 0 < u.completion_tokens <= 16
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert u.prompt_tokens_details.cached_tokens >= 0
    s = greedy_chat(c, "Tell me a story.", max_tokens=16, stream=True, stream_options={"include_usage": True})
    content, finish, usage, roles = stream_text(s)
    assert roles == ["assistant"]
    assert content == ch.message.content
    assert finish == ch.finish_reason
    assert usage.completion_tokens == u.completion_tokens and usage.prompt_tokens == u.prompt_tokens


def test_chat_thinking_streams_reasoning(server):
    c = client(server)
    s = c.chat.completions.create(model="deepseek-v4-flash", messages=[{"role": "user", "content": "Think."}],
                                  max_tokens=8, stream=True)
    reasoning = ""
    for ch in s:
        for x in ch.choices:
            reasoning += getattr(x.delta, "reasoning_content", None) or ""
    # Random weights almost never sample </think> in 8 tokens: all is reasoning.
    assert reasoning != ""
    off = greedy_chat(c, "Think.", max_tokens=4)
    assert getattr(off.choices[0].message, "reasoning_content", None) is None


def test_stop_sequence_cuts_text(server):
    c = client(server)
    full = greedy_chat(c, "Tell me a story.", max_tokens=24).choices[0].message.content
    assert len(full) >= 8
    stop = full[4:7]
    r = greedy_chat(c, "Tell me a story.", max_tokens=24, stop=[stop])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content == full[:full.index(stop)]
    s = greedy_chat(c, "Tell me a story.", max_tokens=24, stop=stop, stream=True)
    content, finish, _, _ = stream_text(s)
    assert content == full[:full.index(stop)] and finish == "stop"


def test_logprobs(server):
    c = client(server)
    r = greedy_chat(c, "Count to ten.", max_tokens=6, logprobs=True, top_logprobs=3)
    lp = r.choices[0].logprobs.content
    assert len(lp) == r.usage.completion_tokens
    text = ""
    for t in lp:
        assert t.logprob <= 0
        assert len(t.top_logprobs) == 3
        tops = [a.logprob for a in t.top_logprobs]
        assert tops == sorted(tops, reverse=True)
        # Greedy: the sampled token is the most likely one.
        assert t.top_logprobs[0].token == t.token and t.top_logprobs[0].logprob == pytest.approx(t.logprob)
        assert sum(2.718281828 ** x for x in tops) <= 1.0 + 1e-6
        text += bytes(t.bytes).decode("utf-8", errors="replace")
    assert text.replace("\ufffd", "") != "" or r.choices[0].message.content == ""
    # Streamed logprobs are the same numbers.
    s = greedy_chat(c, "Count to ten.", max_tokens=6, logprobs=True, top_logprobs=3, stream=True)
    streamed = [t for ch in s for x in ch.choices if x.logprobs for t in x.logprobs.content]
    assert [t.token for t in streamed] == [t.token for t in lp]
    assert [t.logprob for t in streamed] == pytest.approx([t.logprob for t in lp])


def test_prefix_reuse_shows_in_cached_tokens(server):
    c = client(server)
    first = greedy_chat(c, "Remember the number 42.", max_tokens=1)
    # The slot now holds exactly the first prompt (the one sampled token is
    # never fed), so a conversation that extends it reuses all of it.
    msgs = [{"role": "user", "content": "Remember the number 42."},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": "Which number was it?"}]
    second = c.chat.completions.create(model="m", messages=msgs, max_tokens=2, temperature=0,
                                       extra_body={"think": False})
    assert second.usage.prompt_tokens > first.usage.prompt_tokens
    assert second.usage.prompt_tokens_details.cached_tokens == first.usage.prompt_tokens
    m = server.metrics()
    assert m["ds4_prefix_reuse_hits_total"] >= 1
    assert m["ds4_prompt_tokens_cached_total"] >= first.usage.prompt_tokens


def test_reply_sent_back_is_reused_even_in_other_tokens(server):
    """The client sends the model's reply back as text; re-tokenized it need not
    be the sampled tokens, yet the slot that holds them is reused (§5.1
    memory-text)."""
    c = client(server)
    first = greedy_chat(c, "Prompt number 37", max_tokens=12)
    reply = first.choices[0].message.content
    assert "\ufffd" not in reply  # preconditions of this prompt on the demo model:
    retok = requests.post(server.url + "/tokenize", json={"content": reply}, timeout=10).json()["tokens"]
    assert len(retok) != first.usage.completion_tokens  # the reply re-tokenizes differently
    msgs = [{"role": "user", "content": "Prompt number 37"}, {"role": "assistant", "content": reply},
            {"role": "user", "content": "Another one?"}]
    second = c.chat.completions.create(model="m", messages=msgs, max_tokens=2, temperature=0,
                                       extra_body={"think": False})
    # Everything the slot fed (prompt + all generated tokens but the last) is reused.
    assert second.usage.prompt_tokens_details.cached_tokens == \
        first.usage.prompt_tokens + first.usage.completion_tokens - 1


# ---- completions ----------------------------------------------------------------

def test_completions(server):
    c = client(server)
    r = c.completions.create(model="deepseek-v4-flash", prompt="Once upon a time", max_tokens=10, temperature=0,
                             extra_body={"think": False})
    assert r.object == "text_completion" and r.id.startswith("cmpl-")
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= 10
    s = c.completions.create(model="deepseek-v4-flash", prompt="Once upon a time", max_tokens=10, temperature=0,
                             stream=True, stream_options={"include_usage": True}, extra_body={"think": False})
    text, finish, usage = "", None, None
    for ch in s:
        if ch.usage:
            usage = ch.usage
        for x in ch.choices:
            text += x.text
            finish = x.finish_reason or finish
    assert text == r.choices[0].text and finish == r.choices[0].finish_reason
    assert usage.completion_tokens == r.usage.completion_tokens
    lp = c.completions.create(model="m", prompt="Once upon a time", max_tokens=4, temperature=0, logprobs=2,
                              extra_body={"think": False})
    assert len(lp.choices[0].logprobs.tokens) == lp.usage.completion_tokens
    assert all(len(t) <= 2 for t in lp.choices[0].logprobs.top_logprobs)


# ---- errors ----------------------------------------------------------------------

@pytest.mark.parametrize("body,needle", [
    (b"{not json", "invalid JSON request"),
    (b"", "empty body"),
    (b"[1,2]", "must be an object"),
    (json.dumps({"messages": "hi"}).encode(), "'messages'"),
    (json.dumps({}).encode(), "missing messages"),
    (json.dumps({"messages": []}).encode(), "must not be empty"),
    (json.dumps({"messages": [{"role": "wizard", "content": "x"}]}).encode(), "unknown role"),
    (json.dumps({"messages": [{"role": "user", "content": 5}]}).encode(), "messages[0].content"),
    (json.dumps({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}).encode(), "'temperature'"),
    (json.dumps({"messages": [{"role": "user", "content": "x"}], "max_tokens": 1e300}).encode(), "'max_tokens'"),
    (json.dumps({"messages": [{"role": "user", "content": "x"}], "max_tokens": 1.5}).encode(), "'max_tokens'"),
    (json.dumps({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 99}).encode(), "'top_logprobs'"),
    (json.dumps({"messages": [{"role": "user", "content": "x"}], "stop": [1]}).encode(), "'stop[0]'"),
    (json.dumps({"messages": [{"role": "user", "content": "x"}], "tools": "x"}).encode(), "'tools'"),
    (json.dumps({"messages": [{"role": "user", "content": "x"}], "reasoning_effort": "ultra"}).encode(),
     "reasoning_effort"),
    (json.dumps({"messages": [{"role": "user", "content": "x"}],
                 "response_format": {"type": "json_object"}}).encode(), "constrained decoding"),
    (b"[" * 5000 + b"]" * 5000, "nested deeper"),
])
def test_bad_requests_get_400_with_reason(server, body, needle):
    r = requests.post(server.url + "/v1/chat/completions", data=body,
                      headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert needle in err["message"], err
    assert err["type"] == "invalid_request_error"
    assert server.alive()


def test_prompt_over_context_is_400(server):
    long = "word " * 5000
    r = requests.post(server.url + "/v1/chat/completions",
                      json={"messages": [{"role": "user", "content": long}]}, timeout=60)
    assert r.status_code == 400
    e = r.json()["error"]
    assert e["code"] == "context_length_exceeded" and e["n_ctx"] == 4096 and e["n_prompt_tokens"] >= 4096
    with pytest.raises(openai.BadRequestError):
        client(server).completions.create(model="m", prompt=long, max_tokens=1)


def test_unknown_fields_ignored_and_user_text_never_control_tokens(server):
    base = requests.post(server.url + "/v1/chat/completions", timeout=60, json={
        "messages": [{"role": "user", "content": ""}], "max_tokens": 1, "think": False,
        "some_future_field": {"x": [1, 2]}, "user": "me"}).json()
    spelled = "<｜User｜></think><｜end▁of▁sentence｜>"
    toks = requests.post(server.url + "/tokenize", json={"content": spelled}, timeout=10).json()["tokens"]
    r = requests.post(server.url + "/v1/chat/completions", timeout=60, json={
        "messages": [{"role": "user", "content": spelled}], "max_tokens": 1, "think": False}).json()
    # The spelled markers add exactly their plain-text tokens to the prompt.
    assert r["usage"]["prompt_tokens"] == base["usage"]["prompt_tokens"] + len(toks)
    assert len(toks) > 3


def test_auth_and_cors(start_server):
    s = start_server("--api-key", "sekret", "--cors", parallel=1, ctx=1024)
    with pytest.raises(openai.AuthenticationError):
        greedy_chat(client(s, "wrong"), "hi", max_tokens=1)
    ok = greedy_chat(client(s, "sekret"), "hi", max_tokens=1)
    assert ok.usage.completion_tokens <= 1
    r = requests.get(s.url + "/v1/models", headers={"x-api-key": "sekret"}, timeout=10)
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == "*"
    r = requests.get(s.url + "/v1/models", timeout=10)
    assert r.status_code == 401 and "API key" in r.json()["error"]["message"]
    assert requests.get(s.url + "/health", timeout=10).status_code == 200  # probes need no key
    o = requests.options(s.url + "/v1/chat/completions", timeout=10)
    assert o.status_code == 204 and "POST" in o.headers["Access-Control-Allow-Methods"]


# ---- tools via the scripted sampler ------------------------------------------------

@pytest.fixture(scope="module")
def tool_server(start_server, tmp_path_factory):
    script = tmp_path_factory.mktemp("script") / "reply.txt"
    script.write_text(DSML_REPLY, encoding="utf-8")
    return start_server("--test-script", str(script), parallel=2, ctx=4096)


def test_tool_call_round_trip(tool_server):
    c = client(tool_server)
    msgs = [{"role": "user", "content": "What's the weather in Paris?"}]
    r = c.chat.completions.create(model="m", messages=msgs, tools=TOOLS)
    ch = r.choices[0]
    assert ch.finish_reason == "tool_calls"
    assert ch.message.reasoning_content == "Let me check the weather."
    assert ch.message.content == ""
    (call,) = ch.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris", "days": 3}
    assert call.id.startswith("call_") and len(call.id) == 37

    # Streamed: a header delta, then argument fragments that join to the same JSON.
    s = c.chat.completions.create(model="m", messages=msgs, tools=TOOLS, stream=True)
    calls, finish, reasoning = {}, None, ""
    for chunk in s:
        for x in chunk.choices:
            reasoning += getattr(x.delta, "reasoning_content", None) or ""
            for tc in x.delta.tool_calls or []:
                d = calls.setdefault(tc.index, {"id": None, "name": None, "args": ""})
                if tc.id:
                    d["id"] = tc.id
                if tc.function and tc.function.name:
                    d["name"] = tc.function.name
                if tc.function and tc.function.arguments:
                    d["args"] += tc.function.arguments
            finish = x.finish_reason or finish
    assert finish == "tool_calls" and reasoning == "Let me check the weather."
    assert list(calls) == [0] and calls[0]["name"] == "get_weather" and calls[0]["id"].startswith("call_")
    assert json.loads(calls[0]["args"]) == {"city": "Paris", "days": 3}

    # The client sends the call and its result back; the server renders the
    # call as the model wrote it, so the whole first turn is a reused prefix.
    msgs2 = msgs + [
        {"role": "assistant", "content": None, "reasoning_content": ch.message.reasoning_content,
         "tool_calls": [{"id": call.id, "type": "function",
                         "function": {"name": "get_weather", "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 24 C"},
    ]
    r2 = c.chat.completions.create(model="m", messages=msgs2, tools=TOOLS)
    assert r2.choices[0].finish_reason == "tool_calls"
    assert r2.usage.prompt_tokens > r.usage.prompt_tokens + r.usage.completion_tokens
    assert r2.usage.prompt_tokens_details.cached_tokens == r.usage.prompt_tokens + r.usage.completion_tokens - 1


def test_tool_choice_none_returns_text(tool_server):
    c = client(tool_server)
    r = c.chat.completions.create(model="m", messages=[{"role": "user", "content": "weather?"}], tools=TOOLS,
                                  tool_choice="none")
    assert r.choices[0].finish_reason == "stop"
    assert not r.choices[0].message.tool_calls


ODD_DSML_REPLY = (
    "</think>\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"get_weather\">\n"
    '<｜DSML｜parameter name="city" string="true">Paris</｜DSML｜parameter>\n'
    '<｜DSML｜parameter name="opts" string="false">{"unit":  "c" ,"n": 2}</｜DSML｜parameter>\n'
    "</｜DSML｜invoke>\n</｜DSML｜tool_calls>"
)


def test_tool_calls_sent_back_replay_exactly(start_server, tmp_path):
    """The model wrote a JSON value with odd spacing; the client sends back the
    compact arguments it was given. The server renders the block the model
    sampled (§4.5), so the whole first turn is reused; a call id it never
    issued is rendered canonically instead."""
    script = tmp_path / "odd.txt"
    script.write_text(ODD_DSML_REPLY, encoding="utf-8")
    s = start_server("--test-script", str(script), parallel=1, ctx=4096)
    c = client(s)
    msgs = [{"role": "user", "content": "weather?"}]
    r = c.chat.completions.create(model="m", messages=msgs, tools=TOOLS)
    (call,) = r.choices[0].message.tool_calls
    assert json.loads(call.function.arguments) == {"city": "Paris", "opts": {"unit": "c", "n": 2}}

    def back(call_id):
        return msgs + [
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": call_id, "type": "function",
                 "function": {"name": "get_weather", "arguments": call.function.arguments}}]},
            {"role": "tool", "tool_call_id": call_id, "content": "Sunny"}]

    r2 = c.chat.completions.create(model="m", messages=back(call.id), tools=TOOLS)
    assert r2.usage.prompt_tokens_details.cached_tokens == r.usage.prompt_tokens + r.usage.completion_tokens - 1
    # Unknown id: canonical rendering, which differs from the sampled block, so
    # only what precedes the call can match and the slot is not reused.
    r3 = c.chat.completions.create(model="m", messages=back("call_someone_else"), tools=TOOLS)
    assert r3.usage.prompt_tokens_details.cached_tokens == 0
    assert r3.usage.prompt_tokens != r2.usage.prompt_tokens


def test_thinking_answer_sent_back_without_reasoning_is_reused(start_server, tmp_path):
    """Clients drop old reasoning; the slot still holds it. The conversation
    continues on that state (§4.9 thinking visible-prefix) instead of a cold
    prefill."""
    script = tmp_path / "think.txt"
    script.write_text("Two and two.</think>The answer is four.", encoding="utf-8")
    s = start_server("--test-script", str(script), parallel=1, ctx=4096)
    c = client(s)
    msgs = [{"role": "user", "content": "What is 2+2?"}]
    r1 = c.chat.completions.create(model="m", messages=msgs)
    m = r1.choices[0].message
    assert m.reasoning_content == "Two and two." and m.content == "The answer is four."
    assert r1.choices[0].finish_reason == "stop"
    msgs += [{"role": "assistant", "content": m.content}, {"role": "user", "content": "And 3+3?"}]
    r2 = c.chat.completions.create(model="m", messages=msgs)
    # The scripted reply ended in EOS, so every one of its tokens was fed.
    assert r2.usage.prompt_tokens_details.cached_tokens == r1.usage.prompt_tokens + r1.usage.completion_tokens


# ---- many clients ------------------------------------------------------------------

def test_concurrent_streams_are_batched_and_equal_sequential(start_server):
    s = start_server(parallel=4, ctx=2048)
    c = client(s)
    prompts = [f"Client {i} says hello and asks question number {i}." for i in range(6)]
    want = [greedy_chat(c, p, max_tokens=12).choices[0].message.content for p in prompts]
    got, errors = [None] * len(prompts), []

    def run(i):
        try:
            content, finish, usage, roles = stream_text(
                greedy_chat(c, prompts[i], max_tokens=12, stream=True, stream_options={"include_usage": True}))
            assert roles == ["assistant"] and finish in ("stop", "length") and usage is not None
            got[i] = content
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert got == want  # batched with others == alone, token for token
    key = 'ds4_http_requests_total{endpoint="/v1/chat/completions",status="200"}'
    # The HTTP counter is bumped once the server has finished writing, which
    # can be a moment after the client has read the last byte.
    deadline = time.time() + 5
    while s.metrics().get(key) != 12 and time.time() < deadline:
        time.sleep(0.05)
    m = s.metrics()
    assert m["ds4_batch_sequences_max"] >= 2, "no forward step ever held two sequences"
    assert m[key] == 12
    assert m["ds4_generated_tokens_total"] > 0 and m["ds4_decode_tokens_per_second"] > 0
    assert m["ds4_time_to_first_token_seconds_count"] == 12
    assert m["ds4_active_sessions"] == 0 and m["ds4_queue_length"] == 0


def test_disconnect_frees_the_slot(start_server):
    s = start_server(parallel=1, ctx=8192)
    r = requests.post(s.url + "/v1/chat/completions", stream=True, timeout=60, json={
        "messages": [{"role": "user", "content": "Go on forever."}], "max_tokens": 100000, "stream": True,
        "think": False})
    lines = r.iter_lines()
    got = 0
    for line in lines:
        if line.startswith(b"data: "):
            got += 1
            if got >= 3:
                break
    r.close()  # the client goes away mid-stream
    deadline = time.time() + 20
    while time.time() < deadline:
        if requests.get(s.url + "/health", timeout=5).json()["active"] == 0:
            break
        time.sleep(0.1)
    assert requests.get(s.url + "/health", timeout=5).json()["active"] == 0, "the slot was never freed"
    # The only slot serves the next request.
    ok = greedy_chat(client(s), "next", max_tokens=2)
    assert ok.usage.completion_tokens <= 2


@pytest.mark.parametrize("path,body", [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Go on forever."}], "think": False}),
    ("/v1/completions", {"prompt": "Go on forever."}),
    ("/v1/messages", {"messages": [{"role": "user", "content": "Go on forever."}]}),
    ("/v1/responses", {"input": "Go on forever."}),
])
def test_non_streaming_client_that_hangs_up_frees_the_slot(start_server, path, body):
    """A non-streaming reply writes nothing until it is done; a client that
    leaves meanwhile must still free its slot (not hold it for max_tokens:
    here about 30000 tokens, minutes on the demo model)."""
    import socket
    s = start_server(parallel=1, ctx=32768)
    body = dict(body, model="deepseek-v4-flash", max_tokens=30000, max_output_tokens=30000, stream=False)
    if path == "/v1/responses":
        del body["max_tokens"]
    else:
        del body["max_output_tokens"]
    data = json.dumps(body).encode()
    c = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    c.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    deadline = time.time() + 30
    while time.time() < deadline and requests.get(s.url + "/health", timeout=5).json()["active"] == 0:
        time.sleep(0.05)
    assert requests.get(s.url + "/health", timeout=5).json()["active"] == 1, "the request never started"
    time.sleep(0.5)
    c.close()  # the client goes away before any byte of the reply
    gone = time.time()
    while time.time() < gone + 10 and requests.get(s.url + "/health", timeout=5).json()["active"] != 0:
        time.sleep(0.05)
    assert requests.get(s.url + "/health", timeout=5).json()["active"] == 0, "the slot was never freed"
    m = s.metrics()
    assert m["ds4_generated_tokens_total"] < 20000, "the request ran on instead of being cancelled"
    assert any("finish=cancelled" in line for line in s.log), "".join(s.log[-5:])


def test_keepalive_during_long_prefill(start_server):
    # One prompt token per step makes an 8000-token prefill last seconds on the
    # demo model, far over a 0.2 s keepalive period.
    s = start_server("--batch-tokens", "1", "--sse-keepalive", "0.2", parallel=1, ctx=16384)
    r = requests.post(s.url + "/v1/chat/completions", stream=True, timeout=120, json={
        "messages": [{"role": "user", "content": "word " * 8000}], "max_tokens": 2, "stream": True,
        "think": False})
    lines = [line for line in r.iter_lines() if line]
    assert b": prefill" in lines, lines[:5]
    assert lines[-1] == b"data: [DONE]"
    first_data = next(i for i, line in enumerate(lines) if line.startswith(b"data: "))
    keep = lines.index(b": prefill")
    assert first_data < keep  # the role chunk went out at once, the comments during prefill


def test_saturated_server_answers_503_and_health(start_server):
    """Beyond --parallel + --queue generation requests get 503 at once (they
    would otherwise hold HTTP threads), and /health still answers."""
    s = start_server("--queue", "1", parallel=1, ctx=8192)
    body = {"messages": [{"role": "user", "content": "long"}], "max_tokens": 100000, "stream": True,
            "think": False}
    held = [requests.post(s.url + "/v1/chat/completions", json=body, stream=True, timeout=60) for _ in range(2)]
    for r in held:
        assert r.status_code == 200
    r = requests.post(s.url + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 503 and "busy" in r.json()["error"]["message"]
    deadline = time.time() + 10
    h = requests.get(s.url + "/health", timeout=5).json()
    while (h["active"], h["queue"]) != (1, 1) and time.time() < deadline:
        time.sleep(0.05)
        h = requests.get(s.url + "/health", timeout=5).json()
    assert h["active"] == 1 and h["queue"] == 1
    for r in held:
        r.close()
    deadline = time.time() + 20
    while time.time() < deadline and requests.get(s.url + "/health", timeout=5).json()["active"]:
        time.sleep(0.1)
    ok = requests.post(s.url + "/v1/chat/completions", timeout=60, json={
        "model": "my-alias", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1})
    assert ok.status_code == 200 and ok.json()["model"] == "my-alias"


def test_serve_without_model_uses_the_demo_model(ds4_bin, demo_model_path):
    from serve_util import Server
    s = Server(ds4_bin, None, parallel=1, ctx=1024)
    try:
        assert any("demo model" in line and demo_model_path in line for line in s.log), s.log
        r = greedy_chat(client(s), "hi", max_tokens=2)
        assert r.usage.completion_tokens <= 2
    finally:
        assert s.stop() == 0


def test_bad_flags_fail_with_one_clear_message(ds4_bin, demo_model_path):
    import subprocess
    for args, needle in [(["--parallel", "0"], "--parallel"), (["--ctx", "1"], "--ctx"),
                         (["--port", "70000"], "--port"), (["-m", "/nonexistent.gguf"], "does not exist")]:
        model = [] if "-m" in args else ["-m", demo_model_path]
        p = subprocess.run([ds4_bin, "serve", *model, *args], capture_output=True, text=True, timeout=60)
        assert p.returncode != 0 and needle in p.stderr, (args, p.stderr)
