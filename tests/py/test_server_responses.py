"""`ds4 serve`'s OpenAI Responses API (/v1/responses) driven by the official
`openai` SDK's client.responses (it parses every event into its typed union, so
an unknown or malformed event fails here) and by `openai-agents` running agent
turns against it.

The demo model has random weights: tests compare the server with itself
(streamed == not streamed under greedy sampling) or force the reply with the
--test-script hook (docs/server.md), whose text is then the expected answer."""
import json

import openai
import pytest
import requests

MODEL = "deepseek-v4-flash"

TEXT_REPLY = "Let me think about it.</think>Hello there"
TOOL_REPLY = (
    "Let me check the weather.</think>\n\n<｜DSML｜tool_calls>\n"
    '<｜DSML｜invoke name="get_weather">\n'
    '<｜DSML｜parameter name="city" string="true">Paris</｜DSML｜parameter>\n'
    '<｜DSML｜parameter name="days" string="false">3</｜DSML｜parameter>\n'
    "</｜DSML｜invoke>\n</｜DSML｜tool_calls>"
)
PATCH = "*** Begin Patch\n*** Add File: hello.txt\n+Hello <world> & \"friends\"\n*** End Patch"
PATCH_REPLY = (
    "I will add the file.</think>\n\n<｜DSML｜tool_calls>\n"
    '<｜DSML｜invoke name="apply_patch">\n'
    f'<｜DSML｜parameter name="input" string="true">{PATCH}</｜DSML｜parameter>\n'
    "</｜DSML｜invoke>\n</｜DSML｜tool_calls>"
)
FUNCTION_TOOLS = [{
    "type": "function",
    "name": "get_weather",
    "description": "Weather forecast for a city",
    "parameters": {"type": "object",
                   "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                   "required": ["city"]},
    "strict": False,
}]
# Codex's apply_patch: a custom tool whose input follows a grammar.
CUSTOM_TOOLS = [{
    "type": "custom",
    "name": "apply_patch",
    "description": "Use the `apply_patch` tool to edit files.",
    "format": {"type": "grammar", "syntax": "lark",
               "definition": 'start: begin_patch hunk+ end_patch\nbegin_patch: "*** Begin Patch" LF\n'},
}]


def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


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


@pytest.fixture(scope="module")
def patch_server(start_server, tmp_path_factory):
    return scripted(start_server, tmp_path_factory, PATCH_REPLY)


def collect(stream):
    """Events of a streamed response, checked for the lifecycle's framing."""
    events = list(stream)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[1].type == "response.in_progress"
    terminal = [e for e in events if e.type in ("response.completed", "response.incomplete", "response.failed")]
    assert terminal == [events[-1]]  # exactly one terminal event, and it is last
    added = [e.item.id for e in events if e.type == "response.output_item.added"]
    done = [e.item.id for e in events if e.type == "response.output_item.done"]
    assert added == done  # every item opened is closed, in order
    assert [o.id for o in events[-1].response.output] == done
    return events, events[-1].response


# ---- plain turns ------------------------------------------------------------

def test_stream_equals_non_stream_under_greedy(server):
    c = client(server)
    kw = dict(model=MODEL, input="Say something.", reasoning={"effort": "none"}, temperature=0, max_output_tokens=12)
    r = c.responses.create(**kw)
    assert r.object == "response" and r.id.startswith("resp_") and r.model == MODEL
    assert r.status in ("completed", "incomplete")
    assert r.usage.output_tokens <= 12 and r.usage.input_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert r.output_text
    events, final = collect(c.responses.create(stream=True, **kw))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == r.output_text == final.output_text
    assert final.status == r.status and final.usage.output_tokens == r.usage.output_tokens
    if r.status == "incomplete":
        assert final.incomplete_details.reason == "max_output_tokens"
        assert events[-1].type == "response.incomplete"


def test_instructions_and_items_render_like_a_string(server):
    """`input` as a string and as one user message item is the same prompt."""
    c = client(server)
    a = c.responses.create(model=MODEL, input="Hi.", instructions="Be brief.", max_output_tokens=1,
                           reasoning={"effort": "none"})
    b = c.responses.create(model=MODEL, instructions="Be brief.", max_output_tokens=1, reasoning={"effort": "none"},
                           input=[{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi."}]}])
    assert a.usage.input_tokens == b.usage.input_tokens
    assert a.instructions == "Be brief."


def test_reasoning_summary_items(text_server):
    c = client(text_server)
    kw = dict(model=MODEL, input="Greet me.", reasoning={"effort": "high", "summary": "auto"})
    r = c.responses.create(**kw)
    assert r.status == "completed"
    assert [o.type for o in r.output] == ["reasoning", "message"]
    assert r.output[0].summary[0].text == "Let me think about it."
    assert r.output_text == "Hello there"
    events, final = collect(c.responses.create(stream=True, **kw))
    assert events[-1].type == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.reasoning_summary_text.delta") == "Let me think about it."
    assert [o.type for o in final.output] == ["reasoning", "message"] and final.output_text == "Hello there"
    # Without a summary request the reasoning is generated but not surfaced.
    plain = c.responses.create(model=MODEL, input="Greet me.")
    assert [o.type for o in plain.output] == ["message"] and plain.output_text == "Hello there"
    # Reasoning items are replayed as the assistant's reasoning.
    again = c.responses.create(model=MODEL, input=[{"role": "user", "content": "Greet me."},
                                                    *[o.model_dump(exclude_none=True) for o in r.output],
                                                    {"role": "user", "content": "Again."}])
    assert again.output_text == "Hello there"


# ---- tools ------------------------------------------------------------------

def test_function_tool_round_trip(tool_server):
    c = client(tool_server)
    first = [{"role": "user", "content": "Weather in Paris for 3 days?"}]
    kw = dict(model=MODEL, tools=FUNCTION_TOOLS, reasoning={"summary": "auto"})
    r = c.responses.create(input=first, **kw)
    assert r.status == "completed"
    assert [o.type for o in r.output] == ["reasoning", "function_call"]
    call = r.output[1]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris", "days": 3}
    assert call.call_id.startswith("call_") and call.id.startswith("fc_")

    events, final = collect(c.responses.create(input=first, stream=True, **kw))
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert len(done) == 1 and done[0].arguments == args and json.loads(args) == {"city": "Paris", "days": 3}
    assert final.output[-1].type == "function_call" and final.output[-1].arguments == args

    second = first + [o.model_dump(exclude_none=True) for o in r.output] + [
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"}]
    r2 = c.responses.create(input=second, **kw)
    assert r2.status == "completed" and r2.output[-1].type == "function_call"
    assert r2.usage.input_tokens > r.usage.input_tokens + r.usage.output_tokens
    # tool_choice none: the block stays text.
    plain = c.responses.create(input=first, tool_choice="none", **kw)
    assert all(o.type != "function_call" for o in plain.output)


def test_custom_tool_apply_patch(patch_server):
    c = client(patch_server)
    first = [{"role": "user", "content": "Create hello.txt"}]
    # As Codex asks (store=false): reasoning comes back as an opaque blob, not a summary.
    codex = dict(model=MODEL, tools=CUSTOM_TOOLS, store=False, include=["reasoning.encrypted_content"])
    r = c.responses.create(input=first, **codex)
    assert [o.type for o in r.output] == ["reasoning", "custom_tool_call"]
    assert r.output[0].summary == [] and r.output[0].encrypted_content
    calls = [o for o in r.output if o.type == "custom_tool_call"]
    assert len(calls) == 1 and calls[0].name == "apply_patch" and calls[0].input == PATCH
    events, final = collect(c.responses.create(input=first, stream=True, **codex))
    inp = [e for e in events if e.type == "response.custom_tool_call_input.done"]
    assert len(inp) == 1 and inp[0].input == PATCH
    assert final.output[-1].type == "custom_tool_call" and final.output[-1].input == PATCH
    # Codex replays the call and its output.
    second = first + [o.model_dump(exclude_none=True) for o in r.output] + [
        {"type": "custom_tool_call_output", "call_id": calls[0].call_id, "output": "Done!"}]
    r2 = c.responses.create(input=second, **codex)
    assert r2.output[-1].type == "custom_tool_call" and r2.output[-1].input == PATCH
    # The replayed reasoning and call render as the model wrote them: the
    # first turn is a reused prefix.
    assert r2.usage.input_tokens_details.cached_tokens == r.usage.input_tokens + r.usage.output_tokens - 1


# ---- previous_response_id ----------------------------------------------------

def test_previous_response_id_continues_like_a_full_replay(patch_server):
    """A turn that names the previous response renders the prompt a client
    replaying everything would send (the same tokens, the first turn a reused
    prefix), streamed or not, along a chain; store=false turns are not kept."""
    c = client(patch_server)
    first = [{"role": "user", "content": "Create hello.txt"}]
    kw = dict(model=MODEL, tools=CUSTOM_TOOLS)
    r = c.responses.create(input=first, **kw)
    assert r.store is True and r.previous_response_id is None
    call = [o for o in r.output if o.type == "custom_tool_call"][0]
    reply = [{"type": "custom_tool_call_output", "call_id": call.call_id, "output": "Done!"}]
    r2 = c.responses.create(previous_response_id=r.id, input=reply, **kw)
    assert r2.previous_response_id == r.id and r2.status == "completed"
    assert r2.usage.input_tokens_details.cached_tokens == r.usage.input_tokens + r.usage.output_tokens - 1
    # The same turn replayed in full, reasoning included as Codex keeps it.
    codex = c.responses.create(input=first, store=False, include=["reasoning.encrypted_content"], **kw)
    full = first + [o.model_dump(exclude_none=True) for o in codex.output] + [
        {"type": "custom_tool_call_output", "call_id": codex.output[-1].call_id, "output": "Done!"}]
    replayed = c.responses.create(input=full, store=False, **kw)
    assert replayed.usage.input_tokens == r2.usage.input_tokens
    # A chain, the last link streamed.
    call2 = r2.output[-1]
    events, r3 = collect(c.responses.create(
        previous_response_id=r2.id, stream=True, **kw,
        input=[{"type": "custom_tool_call_output", "call_id": call2.call_id, "output": "Done again!"}]))
    assert r3.previous_response_id == r2.id and r3.status == "completed"
    assert r3.usage.input_tokens > r2.usage.input_tokens + r2.usage.output_tokens
    assert r3.usage.input_tokens_details.cached_tokens == r2.usage.input_tokens + r2.usage.output_tokens - 1
    # A streamed response can be continued as well; a plain string input too.
    r4 = c.responses.create(previous_response_id=r3.id, input="Thanks.", **kw)
    assert r4.usage.input_tokens > r3.usage.input_tokens + r3.usage.output_tokens
    # store=false: nothing to continue from.
    with pytest.raises(openai.BadRequestError) as e:
        c.responses.create(previous_response_id=codex.id, input="more", **kw)
    assert "not found" in str(e.value)


def test_retrieve_and_delete_a_stored_response(patch_server):
    c = client(patch_server)
    r = c.responses.create(model=MODEL, input="Create hello.txt", tools=CUSTOM_TOOLS)
    got = c.responses.retrieve(r.id)
    assert got.model_dump() == r.model_dump()
    events, streamed = collect(c.responses.create(model=MODEL, input="Create hello.txt", tools=CUSTOM_TOOLS,
                                                  stream=True))
    assert c.responses.retrieve(streamed.id).model_dump() == streamed.model_dump()
    deleted = requests.delete(patch_server.url + f"/v1/responses/{r.id}", timeout=30)
    assert deleted.status_code == 200 and deleted.json() == {"id": r.id, "object": "response.deleted", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(r.id)
    with pytest.raises(openai.BadRequestError):
        c.responses.create(model=MODEL, previous_response_id=r.id, input="more", tools=CUSTOM_TOOLS)
    assert requests.delete(patch_server.url + f"/v1/responses/{r.id}", timeout=30).status_code == 404
    kept = c.responses.create(model=MODEL, input="x", store=False)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(kept.id)


# ---- errors -----------------------------------------------------------------

@pytest.mark.parametrize("body,needle", [
    ({}, "missing input"),
    ({"input": 5}, "input"),
    ({"input": "x", "previous_response_id": "resp_1"}, "previous response 'resp_1' not found"),
    ({"input": "x", "previous_response_id": 7}, "previous_response_id"),
    ({"input": "x", "store": "yes"}, "store"),
    ({"input": "x", "conversation": "c"}, "conversation"),
    ({"input": "x", "tool_choice": "required"}, "tool_choice"),
    ({"input": "x", "tool_choice": {"type": "function", "name": "f"}}, "forced tool_choice"),
    ({"input": [{"type": "message", "role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
     "input[0].content[0].type"),
    ({"input": [{"type": "mystery"}]}, "input[0].type"),
    ({"input": [{"type": "function_call_output", "call_id": "call_x", "output": "o"}]}, "call_x"),
    ({"input": "x", "reasoning": {"effort": "extreme"}}, "reasoning.effort"),
    ({"input": "x", "max_output_tokens": "10"}, "max_output_tokens"),
    ({"input": "x", "text": {"format": {"type": "json_schema", "name": "s", "schema": {}}}}, "json_schema"),
    ({"input": [{"role": "wizard", "content": "x"}]}, "wizard"),
])
def test_bad_requests(server, body, needle):
    r = requests.post(server.url + "/v1/responses", json={"model": MODEL, **body}, timeout=30)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and needle in err["message"]


def test_bad_request_through_the_sdk(server):
    with pytest.raises(openai.BadRequestError) as e:
        client(server).responses.create(model=MODEL, input="x", previous_response_id="resp_123")
    assert "replay full input" in str(e.value)


# ---- openai-agents ----------------------------------------------------------

def test_openai_agents_turns(text_server, tool_server):
    agents = pytest.importorskip("agents")
    from openai import AsyncOpenAI
    agents.set_tracing_disabled(True)

    def model(server):
        return agents.OpenAIResponsesModel(
            model=MODEL, openai_client=AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0))

    answer = agents.Runner.run_sync(agents.Agent(name="greeter", instructions="Greet.", model=model(text_server)),
                                    "Hello?")
    assert answer.final_output == "Hello there"

    seen = []

    @agents.function_tool
    def get_weather(city: str, days: int = 1) -> str:
        """Weather forecast for a city."""
        seen.append((city, days))
        return f"sunny in {city}"

    agent = agents.Agent(name="weather", instructions="Use tools.", model=model(tool_server), tools=[get_weather])
    # The scripted model calls the tool on every turn, so the run ends at
    # max_turns, after the tool ran with the model's arguments each time.
    with pytest.raises(agents.MaxTurnsExceeded):
        agents.Runner.run_sync(agent, "Weather in Paris?", max_turns=2)
    assert seen == [("Paris", 3), ("Paris", 3)]


# ---- failed turns -----------------------------------------------------------

BROKEN_REPLY = ("Calling.</think>\n\n<｜DSML｜tool_calls>\n"
                '<｜DSML｜invoke name="get_weather">\n'
                '<｜DSML｜parameter name="city" string="true">Par')  # then EOS: never closed


def test_unterminated_tool_call_fails_the_response(start_server, tmp_path_factory):
    """A tool block the model never closed cannot be executed: the stream still
    ends with exactly one terminal event, response.failed (reference-behavior §4.8)."""
    s = scripted(start_server, tmp_path_factory, BROKEN_REPLY)
    c = client(s)
    events, final = collect(c.responses.create(model=MODEL, input="weather?", tools=FUNCTION_TOOLS, stream=True))
    assert events[-1].type == "response.failed" and final.status == "failed"
    assert final.error.code == "server_error" and "unterminated" in final.error.message
    assert not [o for o in final.output if o.type == "function_call"]
    r = c.responses.create(model=MODEL, input="weather?", tools=FUNCTION_TOOLS)
    assert r.status == "failed" and "unterminated" in r.error.message
