"""The prefix cache behind `ds4 serve` (docs/prefix-cache.md), driven the way
coding agents drive it: a tool-using conversation replayed turn after turn in
the Anthropic and the Responses shapes, the whole history resent each time,
a Claude Code billing line that changes on every request, and a short
"subagent" call between turns that takes the only slot (--parallel 1), so the
main conversation's live state is gone and must come back from the cache.
Then the server restarts on the same --kv-disk-dir and the next turn resumes
from disk. Every turn's usage (the official SDKs parse it) must report >= 95%
of the prompt as cached after the first; the table is printed (pytest -s).

Replies are forced with --test-script (random weights would ramble): every
reply is the same tool call, so every turn is a tool round trip. The call
spells a number as `1e1`, which the client sends back as 10.0: only the exact
DSML replay map (which travels with the checkpoints on disk) renders the
history as the model wrote it."""
import random

import anthropic
import openai
import pytest

MODEL = "deepseek-v4-flash"

TOOL_REPLY = (
    "I need the forecast.</think>\n\n<｜DSML｜tool_calls>\n"
    '<｜DSML｜invoke name="get_weather">\n'
    '<｜DSML｜parameter name="city" string="true">Paris</｜DSML｜parameter>\n'
    '<｜DSML｜parameter name="days" string="false">1e1</｜DSML｜parameter>\n'
    "</｜DSML｜invoke>\n</｜DSML｜tool_calls>"
)
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "number"}},
          "required": ["city"]}
ANTHROPIC_TOOLS = [{"name": "get_weather", "description": "Weather forecast for a city", "input_schema": SCHEMA}]
RESPONSES_TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather forecast for a city",
                    "parameters": SCHEMA, "strict": False}]
# A long system prompt, as agents send (Claude Code's is ~11k tokens).
SYSTEM = "You are a coding agent working in a large repository.\n" + "".join(
    f"Rule {i}: when you edit src/module_{i}/file_{i * 7 % 13}.cpp keep its style, run its tests and "
    f"report what changed in one line.\n" for i in range(60))
TURNS = 5
CACHE_FLAGS = ["--kv-cache-min-tokens", "64", "--kv-cache-block-tokens", "64"]


def billing_line(rng):
    return f"x-anthropic-billing-header: cc_version=2.1.{rng.randint(10, 99)}; cc_entrypoint=cli; cch={rng.randrange(16**5):05x};"


def start(start_server, script, disk):
    return start_server("--test-script", str(script), "--kv-disk-dir", str(disk), *CACHE_FLAGS, ctx=8192, parallel=1)


class AnthropicAgent:
    def __init__(self):
        self.messages = [{"role": "user", "content": "What is the weather in Paris this week?"}]
        self.rng = random.Random(7)

    def turn(self, server):
        c = anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0, timeout=300)
        system = [{"type": "text", "text": billing_line(self.rng)}, {"type": "text", "text": SYSTEM}]
        r = c.messages.create(model=MODEL, max_tokens=300, system=system, tools=ANTHROPIC_TOOLS,
                              messages=self.messages)
        calls = [b for b in r.content if b.type == "tool_use"]
        assert r.stop_reason == "tool_use" and len(calls) == 1, r
        self.messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in r.content]})
        self.messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": calls[0].id, "content": f"sunny, {18 + len(self.messages)} C"}]})
        u = r.usage
        return u.input_tokens + u.cache_read_input_tokens, u.cache_read_input_tokens

    def subagent(self, server, i):
        c = anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0, timeout=300)
        c.messages.create(model=MODEL, max_tokens=300, tools=ANTHROPIC_TOOLS,
                          system=[{"type": "text", "text": billing_line(self.rng)},
                                  {"type": "text", "text": "You are a search subagent. Find files."}],
                          messages=[{"role": "user", "content": f"Find files named notes_{i}.md"}])


class ResponsesAgent:
    def __init__(self):
        self.items = [{"role": "user", "content": "What is the weather in Paris this week?"}]
        self.rng = random.Random(7)

    def turn(self, server):
        c = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300)
        # As Codex asks: nothing stored server-side, reasoning returned as an opaque blob.
        r = c.responses.create(model=MODEL, instructions=SYSTEM, input=self.items, tools=RESPONSES_TOOLS,
                               max_output_tokens=300, store=False, include=["reasoning.encrypted_content"],
                               prompt_cache_key=f"session-{self.rng.randrange(1 << 30)}")
        calls = [o for o in r.output if o.type == "function_call"]
        assert len(calls) == 1, r.output
        self.items += [o.model_dump(exclude_none=True) for o in r.output]
        self.items.append({"type": "function_call_output", "call_id": calls[0].call_id,
                           "output": f"sunny, {18 + len(self.items)} C"})
        u = r.usage
        return u.input_tokens, u.input_tokens_details.cached_tokens

    def subagent(self, server, i):
        c = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300)
        c.responses.create(model=MODEL, instructions="You are a search subagent. Find files.", tools=RESPONSES_TOOLS,
                           input=[{"role": "user", "content": f"Find files named notes_{i}.md"}],
                           max_output_tokens=300, store=False)


def cached_total(server, source):
    return server.metrics().get(f'ds4_prompt_tokens_cached_by_source_total{{source="{source}"}}', 0)


@pytest.mark.parametrize("shape", ["anthropic", "responses"])
def test_agent_conversation_is_served_from_the_cache(start_server, tmp_path, shape):
    script = tmp_path / "reply.txt"
    script.write_text(TOOL_REPLY, encoding="utf-8")
    disk = tmp_path / "kv"
    agent = AnthropicAgent() if shape == "anthropic" else ResponsesAgent()
    rows = []
    server = start(start_server, script, disk)
    for i in range(TURNS):
        ram_before = cached_total(server, "ram")
        prompt, cached = agent.turn(server)
        source = "ram" if cached_total(server, "ram") > ram_before else ("none" if cached == 0 else "slot")
        rows.append((i + 1, "live", prompt, cached, source))
        agent.subagent(server, i)  # takes the only slot: the conversation leaves it
    assert server.stop() == 0, "".join(server.log)  # stores the live session, flushes RAM entries to disk
    files = list(disk.glob("*.ds4kv"))
    assert files, "nothing was written to --kv-disk-dir at shutdown"

    server = start(start_server, script, disk)
    prompt, cached = agent.turn(server)
    rows.append((TURNS + 1, "after restart", prompt, cached, "disk" if cached_total(server, "disk") else "?"))
    m = server.metrics()

    print(f"\n{shape}: turn | server | prompt tokens | cached | from | share")
    for t, when, p, c, src in rows:
        print(f"{shape}: {t:4d} | {when:13s} | {p:13d} | {c:6d} | {src:4s} | {100.0 * c / p:5.1f}%")

    assert rows[0][3] == 0, "the first turn cannot be cached"
    for t, when, p, c, src in rows[1:]:
        assert c >= 0.95 * p, f"turn {t} ({when}): only {c} of {p} prompt tokens came from the cache"
    # Between turns the subagent held the slot, so turns 2.. came from the RAM tier.
    assert all(r[4] == "ram" for r in rows[1:TURNS]), rows
    assert m['ds4_prefix_cache_hits_total{tier="disk"}'] >= 1, m
    assert cached_total(server, "disk") == rows[-1][3]
    assert any("from=disk" in line for line in server.log), "".join(server.log)


def test_corrupt_and_foreign_files_are_dropped_and_serving_goes_on(start_server, tmp_path):
    """Files in --kv-disk-dir that are not valid checkpoints of this model are
    deleted at startup with one log line each; others are left alone."""
    script = tmp_path / "reply.txt"
    script.write_text(TOOL_REPLY, encoding="utf-8")
    disk = tmp_path / "kv"
    agent = AnthropicAgent()
    server = start(start_server, script, disk)
    agent.turn(server)
    assert server.stop() == 0
    good = sorted(disk.glob("*.ds4kv"))
    assert good
    (disk / "0123456789abcdef.ds4kv").write_bytes(b"DS4CKPT\0" + b"\x01" * 200)  # garbage with our magic
    truncated = disk / "fedcba9876543210.ds4kv"
    truncated.write_bytes(good[0].read_bytes()[:1000])
    (disk / "README.txt").write_text("not ours")
    server = start(start_server, script, disk)
    assert not (disk / "0123456789abcdef.ds4kv").exists() and not truncated.exists()
    assert (disk / "README.txt").exists()
    assert sum("prefix cache: discarded" in line for line in server.log) == 2, "".join(server.log)
    prompt, cached = agent.turn(server)
    assert cached >= 0.95 * prompt
    assert server.metrics()["ds4_prefix_cache_discarded_files_total"] == 2


def test_kill_during_saves_never_leaves_a_corrupt_entry(ds4_bin, demo_model_path, start_server, tmp_path):
    """`kill -9` at random moments while the server prefills and writes
    checkpoints (RAM tier off, so every checkpoint is a disk write: one every
    64 tokens of a long prefill), 12 times, each a new conversation; then a
    clean start discards nothing and serves from what survived. The demo
    model's checkpoints are small and written fast, so these kills seldom cut
    a write (the count is printed); tests/unit/engine/prefix_cache_fault_test.cpp
    kills two writers in tight store loops 60 times and requires cut writes."""
    import signal
    import threading
    import time
    from serve_util import Server
    disk = tmp_path / "kv"
    flags = ["--kv-disk-dir", str(disk), "--cache-ram-mb", "0", "--kv-cache-min-tokens", "64",
             "--kv-cache-block-tokens", "64", "--kv-cache-continued-interval-tokens", "64"]
    rng = random.Random(11)
    removed = 0  # temporaries of killed writers, removed by the next start's scan
    body = {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": SYSTEM}]}
    for i in range(12):
        # A new conversation each round, so each round writes new files.
        body["messages"][0]["content"] = f"Round {i}. " + SYSTEM
        s = Server(ds4_bin, demo_model_path, *flags, ctx=8192, parallel=1)
        removed += "".join(s.log).count("removed unfinished write")
        t = threading.Thread(target=lambda: _post_quietly(s.url + "/v1/chat/completions", body), daemon=True)
        t.start()
        time.sleep(rng.uniform(0.05, 1.0))
        s.proc.send_signal(signal.SIGKILL)
        s.proc.wait(10)
        t.join(10)
    assert list(disk.glob("*.ds4kv")), "no checkpoint was ever completed: the kills came too early to test anything"
    s = start_server(*flags, ctx=8192, parallel=1)
    log = "".join(s.log)
    removed += log.count("removed unfinished write")
    print(f"\nkill test: {len(list(disk.glob('*.ds4kv')))} checkpoints survived, "
          f"{removed} writes were cut by a kill (their temporaries removed at the next start)")
    assert "prefix cache: discarded" not in log, log
    assert not list(disk.glob("*.tmp.*")), "temporaries of dead writers were left behind"
    import requests
    r = requests.post(s.url + "/v1/chat/completions", json=body, timeout=120).json()
    assert r["usage"]["prompt_tokens_details"]["cached_tokens"] >= 64, r["usage"]
    assert s.metrics()['ds4_prefix_cache_hits_total{tier="disk"}'] == 1


def _post_quietly(url, body):
    import requests
    try:
        requests.post(url, json=body, timeout=30)
    except requests.RequestException:
        pass  # the server was killed under it
