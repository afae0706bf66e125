"""`ds4 serve`'s Anthropic Messages API (/v1/messages, /v1/messages/count_tokens)
driven by the official `anthropic` Python SDK, the oracle of the wire format:
the SDK parses every response and accumulates every SSE stream itself, so a
malformed event or block fails here.

The demo model has random weights, so tests compare the server with itself
(streamed == not streamed under greedy sampling, count_tokens == the prompt the
server ran) or force the reply with the --test-script hook (docs/server.md),
whose text is then the expected answer."""
import json

import anthropic
import pytest
import requests

MODEL = "deepseek-v4-flash"

# A thinking turn that closes its reasoning and answers; the stop-sequence
# test cuts it at "STOP".
TEXT_REPLY = "Let me think about it.</think>Hello STOP world"
TOOL_REPLY = (
    "Let me check the weather.</think>\n\n<｜DSML｜tool_calls>\n"
    '<｜DSML｜invoke name="get_weather">\n'
    '<｜DSML｜parameter name="city" string="true">Paris</｜DSML｜parameter>\n'
    '<｜DSML｜parameter name="days" string="false">3</｜DSML｜parameter>\n'
    "</｜DSML｜invoke>\n</｜DSML｜tool_calls>"
)
TOOLS = [{
    "name": "get_weather",
    "description": "Weather forecast for a city",
    "input_schema": {"type": "object",
                     "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                     "required": ["city"]},
    "cache_control": {"type": "ephemeral"},
}]


def client(server, **kw):
    kw.setdefault("api_key", "unused")
    return anthropic.Anthropic(base_url=server.url, max_retries=0, timeout=120, **kw)


def scripted(start_server, tmp_path_factory, text):
    path = tmp_path_factory.mktemp("script") / "reply.txt"
    path.write_text(text, encoding="utf-8")
    return start_server("--test-script", str(path), ctx=4096, parallel=2)


@pytest.fixture(scope="module")
def text_server(start_server, tmp_path_factory):
    return scripted(start_server, tmp_path_factory, TEXT_REPLY)


@pytest.fixture(scope="module")
def tool_server(start_server, tmp_path_factory):
    return scripted(start_server, tmp_path_factory, TOOL_REPLY)


def texts(msg, kind):
    return [b for b in msg.content if b.type == kind]


# ---- plain turns ------------------------------------------------------------

def test_stream_equals_non_stream_under_greedy(server):
    c = client(server)
    kw = dict(model=MODEL, max_tokens=12, extra_body={"temperature": 0}, thinking={"type": "disabled"},
              messages=[{"role": "user", "content": "Say something."}])
    msg = c.messages.create(**kw)
    assert msg.type == "message" and msg.role == "assistant" and msg.model == MODEL
    assert msg.stop_reason in ("end_turn", "max_tokens")
    assert 1 <= msg.usage.output_tokens <= 12
    assert not texts(msg, "thinking")
    with c.messages.stream(**kw) as s:
        events = [e.type for e in s]
        final = s.get_final_message()
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert final.content[0].text == msg.content[0].text
    assert final.stop_reason == msg.stop_reason
    assert final.usage.output_tokens == msg.usage.output_tokens


def test_thinking_blocks_non_stream_and_stream(text_server):
    c = client(text_server)
    kw = dict(model=MODEL, max_tokens=64, thinking={"type": "enabled", "budget_tokens": 1024},
              messages=[{"role": "user", "content": "Greet me."}])
    msg = c.messages.create(**kw)
    assert [b.type for b in msg.content] == ["thinking", "text"]
    assert msg.content[0].thinking == "Let me think about it."
    assert msg.content[0].signature  # clients replay it; any non-empty string
    assert msg.content[1].text == "Hello STOP world"
    assert msg.stop_reason == "end_turn" and msg.stop_sequence is None
    with c.messages.stream(**kw) as s:
        kinds = [(e.type, getattr(getattr(e, "content_block", None), "type", None)) for e in s]
        final = s.get_final_message()
    assert ("content_block_start", "thinking") in kinds and ("content_block_start", "text") in kinds
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == msg.content[0].thinking
    assert final.content[0].signature == final.id
    assert final.content[1].text == msg.content[1].text
    # The thinking block is replayed in the next turn (with its signature).
    again = c.messages.create(model=MODEL, max_tokens=64, messages=[
        {"role": "user", "content": "Greet me."},
        {"role": "assistant", "content": [b.model_dump() for b in msg.content]},
        {"role": "user", "content": "Again."}])
    assert again.content[-1].text == "Hello STOP world"


def test_stop_sequence(text_server):
    c = client(text_server)
    kw = dict(model=MODEL, max_tokens=64, stop_sequences=["nope", "STOP"],
              messages=[{"role": "user", "content": "Greet me."}])
    msg = c.messages.create(**kw)
    assert msg.stop_reason == "stop_sequence" and msg.stop_sequence == "STOP"
    assert texts(msg, "text")[0].text == "Hello "
    with c.messages.stream(**kw) as s:
        final = s.get_final_message()
    assert final.stop_reason == "stop_sequence" and final.stop_sequence == "STOP"
    assert texts(final, "text")[0].text == "Hello "


def test_raw_sse_framing(server):
    """What the SDK hides: every event's `event:` name equals its data's type,
    and a ping follows message_start."""
    r = requests.post(server.url + "/v1/messages?beta=true", stream=True, timeout=60, json={
        "model": MODEL, "max_tokens": 4, "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream")
    names = []
    for block in r.text.split("\n\n"):
        lines = [ln for ln in block.split("\n") if ln and not ln.startswith(":")]
        if not lines:
            continue
        assert lines[0].startswith("event: ") and lines[1].startswith("data: ")
        name = lines[0][len("event: "):]
        assert json.loads(lines[1][len("data: "):])["type"] == name
        names.append(name)
    assert names[:2] == ["message_start", "ping"] and names[-2:] == ["message_delta", "message_stop"]


# ---- tools ------------------------------------------------------------------

def test_tool_round_trip(tool_server):
    c = client(tool_server)
    first = [{"role": "user", "content": "Weather in Paris for 3 days?"}]
    msg = c.messages.create(model=MODEL, max_tokens=200, tools=TOOLS, messages=first)
    assert msg.stop_reason == "tool_use"
    assert [b.type for b in msg.content] == ["thinking", "tool_use"]
    call = msg.content[1]
    assert call.name == "get_weather" and call.input == {"city": "Paris", "days": 3}
    assert call.id.startswith("toolu_") and len(call.id) == len("toolu_") + 32

    # Streamed: the SDK accumulates the input_json_delta fragments itself.
    with c.messages.stream(model=MODEL, max_tokens=200, tools=TOOLS, messages=first) as s:
        events = list(s)
        final = s.get_final_message()
    assert any(e.type == "content_block_delta" and e.delta.type == "input_json_delta" for e in events)
    assert final.stop_reason == "tool_use"
    tool_use = texts(final, "tool_use")
    assert len(tool_use) == 1 and tool_use[0].input == {"city": "Paris", "days": 3}

    # The result goes back; the history (thinking + tool_use) is replayed.
    second = first + [
        {"role": "assistant", "content": [b.model_dump() for b in msg.content]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": call.id, "content": [{"type": "text", "text": "sunny, 21 C"}]},
            {"type": "text", "text": "Thanks."}]},
    ]
    reply = c.messages.create(model=MODEL, max_tokens=200, tools=TOOLS, messages=second)
    assert reply.stop_reason == "tool_use"  # the script answers every turn with the call
    # The replayed thinking + tool_use render as the model wrote them, so the
    # whole first turn (less its last token, never fed) is a reused prefix.
    first_total = msg.usage.input_tokens + msg.usage.cache_read_input_tokens
    assert reply.usage.cache_read_input_tokens == first_total + msg.usage.output_tokens - 1
    counted = c.messages.count_tokens(model=MODEL, tools=TOOLS, messages=second).input_tokens
    assert counted == reply.usage.input_tokens + reply.usage.cache_read_input_tokens \
        + reply.usage.cache_creation_input_tokens

    # tool_choice none: the tools are neither rendered nor parsed, the block stays text.
    plain = c.messages.create(model=MODEL, max_tokens=200, tools=TOOLS, tool_choice={"type": "none"}, messages=first)
    assert plain.stop_reason == "end_turn" and not texts(plain, "tool_use")
    assert "get_weather" in texts(plain, "text")[0].text



def test_tool_result_for_unknown_id_is_refused(tool_server):
    with pytest.raises(anthropic.BadRequestError) as e:
        client(tool_server).messages.create(model=MODEL, max_tokens=10, tools=TOOLS, messages=[
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_nope", "content": "x"}]}])
    assert "toolu_nope" in str(e.value) and e.value.body["type"] == "error"


# ---- count_tokens -----------------------------------------------------------

def test_count_tokens_equals_the_prompt_the_server_runs(server):
    c = client(server)
    kw = dict(model=MODEL, system=[{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
              messages=[{"role": "user", "content": "What is 2+2?"},
                        {"role": "assistant", "content": "4"},
                        {"role": "user", "content": [{"type": "text", "text": "And 3+3?"}]}])
    for thinking in ({"type": "disabled"}, {"type": "enabled", "budget_tokens": 2000}):
        counted = c.messages.count_tokens(thinking=thinking, **kw).input_tokens
        msg = c.messages.create(max_tokens=1, thinking=thinking, **kw)
        ran = msg.usage.input_tokens + msg.usage.cache_read_input_tokens + msg.usage.cache_creation_input_tokens
        assert counted == ran
    # Independent check of what the prompt holds: the user's words are in it.
    with_tools = c.messages.count_tokens(tools=TOOLS, **kw).input_tokens
    assert with_tools > counted + 20


def test_billing_header_does_not_change_the_prompt(server):
    c = client(server)

    def count(system):
        return c.messages.count_tokens(model=MODEL, system=system,
                                       messages=[{"role": "user", "content": "hi"}]).input_tokens

    body = {"type": "text", "text": "You are Claude Code, an agent."}
    a = count([{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.0.14; cc_entrypoint=cli; cch=1a2b3;"}, body])
    b = count([{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.0.14; cc_entrypoint=cli; cch=9f8e7;"}, body])
    assert a == b == count([body])
    assert count([{"type": "text", "text": "something else entirely, which is longer"}, body]) > a


# ---- errors -----------------------------------------------------------------

def test_auth(start_server):
    s = start_server("--api-key", "sekret", ctx=2048, parallel=1)
    with pytest.raises(anthropic.AuthenticationError) as e:
        client(s, api_key="wrong").messages.create(model=MODEL, max_tokens=1, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.AuthenticationError):
        client(s, api_key="wrong").messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "x"}])
    ok = dict(model=MODEL, max_tokens=1, messages=[{"role": "user", "content": "x"}])
    assert client(s, api_key="sekret").messages.create(**ok).usage.output_tokens == 1       # x-api-key
    assert anthropic.Anthropic(base_url=s.url, auth_token="sekret", max_retries=0).messages.create(**ok).type == "message"
    # Claude Code's form: ?beta=true and beta headers.
    r = requests.post(s.url + "/v1/messages?beta=true", json=ok, timeout=60,
                      headers={"x-api-key": "sekret", "anthropic-version": "2023-06-01",
                               "anthropic-beta": "interleaved-thinking-2025-05-14"})
    assert r.status_code == 200 and r.json()["type"] == "message"


@pytest.mark.parametrize("body,field", [
    ({"messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": 7}]}, "messages[0].content"),
    ({"max_tokens": 5, "messages": [{"role": "robot", "content": "x"}]}, "robot"),
    ({"max_tokens": 5, "messages": "x"}, "messages"),
    ({"max_tokens": 5, "messages": []}, "messages"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "system": 3}, "system"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tools": [{"description": "no name"}]}, "tools[0].name"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "thinking": "yes"}, "thinking"),
    ({"max_tokens": "5", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "stop_sequences": [1]}, "stop_sequences"),
])
def test_bad_requests_get_anthropic_errors(server, body, field):
    r = requests.post(server.url + "/v1/messages", json={"model": MODEL, **body}, timeout=30)
    assert r.status_code == 400
    j = r.json()
    assert j["type"] == "error" and j["error"]["type"] == "invalid_request_error"
    assert field in j["error"]["message"]


def test_bad_request_through_the_sdk(server):
    with pytest.raises(anthropic.BadRequestError) as e:
        client(server).messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": [{"type": "text", "text": 5}]}])
    assert "messages[0].content[0].text" in e.value.body["error"]["message"]


def test_prompt_over_the_context(start_server):
    s = start_server(ctx=256, parallel=1)
    r = requests.post(s.url + "/v1/messages", timeout=30, json={
        "model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "word " * 400}]})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["n_ctx"] == 256 and err["n_prompt_tokens"] >= 256
    # count_tokens still counts it.
    n = requests.post(s.url + "/v1/messages/count_tokens", timeout=30, json={
        "model": MODEL, "messages": [{"role": "user", "content": "word " * 400}]}).json()["input_tokens"]
    assert n == err["n_prompt_tokens"]


def test_errors_before_the_handler_are_anthropic_shaped(server):
    """Raised by the HTTP layer, not the adapter: an unrouted method, a body over
    the 64 MiB limit (announced by Content-Length, never sent)."""
    r = requests.get(server.url + "/v1/messages", timeout=10)
    assert r.status_code == 404 and r.json()["type"] == "error" and r.json()["error"]["type"] == "not_found_error"
    import socket
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100000000\r\n\r\n{")
        # The server answers with Connection: close; the head and body may come in
        # separate segments, so read until it closes.
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head = data.decode("latin-1")
    assert head.startswith("HTTP/1.1 413"), head
    assert '"type":"error"' in head and '"request_too_large"' in head


def test_unterminated_tool_call_is_an_error(start_server, tmp_path_factory):
    """A tool block the model never closed must not end as end_turn: the client
    would run a half-streamed call (reference-behavior §4.8)."""
    s = scripted(start_server, tmp_path_factory,
                 "Calling.</think>\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"get_weather\">\n"
                 "<｜DSML｜parameter name=\"city\" string=\"true\">Par")
    c = client(s)
    with pytest.raises(anthropic.InternalServerError) as e:
        c.messages.create(model=MODEL, max_tokens=100, tools=TOOLS, messages=[{"role": "user", "content": "w?"}])
    assert e.value.body["error"]["type"] == "api_error" and "unterminated" in e.value.body["error"]["message"]
    with pytest.raises(anthropic.APIStatusError) as e:
        with c.messages.stream(model=MODEL, max_tokens=100, tools=TOOLS,
                               messages=[{"role": "user", "content": "w?"}]) as st:
            for _ in st:
                pass
    assert "unterminated" in str(e.value)
