"""Claude Code itself, headless, against `ds4 serve`: the `claude` CLI bundled in
PyPI's claude-agent-sdk wheel, driven through that SDK with ANTHROPIC_BASE_URL
pointing at the server. Whatever Claude Code sends (its ~11k-token system
prompt and tool schemas, ?beta=true, beta headers, cache_control, system
reminders, the billing header) must be taken, and its turns must complete
without a protocol error. The replies are forced with --test-script (random
weights would only ramble until max_tokens)."""
import asyncio

import pytest

sdk = pytest.importorskip("claude_agent_sdk")  # skipped only when the wheel cannot be installed

MODEL = "deepseek-v4-flash"


def run_claude(server, tmp_path, prompt, **opts):
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {"ANTHROPIC_BASE_URL": server.url, "ANTHROPIC_API_KEY": "dummy", "HOME": str(home),
           "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_TELEMETRY": "1", "DISABLE_AUTOUPDATER": "1"}
    options = sdk.ClaudeAgentOptions(model=MODEL, cwd=str(tmp_path), env=env, setting_sources=[], **opts)

    msgs = []

    async def go():
        async for m in sdk.query(prompt=prompt, options=options):
            msgs.append(m)

    try:
        asyncio.run(asyncio.wait_for(go(), 400))
    except sdk.ClaudeSDKError as e:  # the CLI exits 1 after an error result (e.g. max turns)
        return msgs, e
    return msgs, None


def scripted(start_server, tmp_path, text):
    path = tmp_path / "reply.txt"
    path.write_text(text, encoding="utf-8")
    return start_server("--test-script", str(path), ctx=32768, parallel=2)


def test_claude_code_text_turn(start_server, tmp_path):
    server = scripted(start_server, tmp_path, "The user greets me.</think>Hi from ds4")
    msgs, err = run_claude(server, tmp_path, "say hi", max_turns=1)
    assert err is None, err
    result = [m for m in msgs if isinstance(m, sdk.ResultMessage)]
    assert len(result) == 1 and not result[0].is_error, result
    assert result[0].result == "Hi from ds4"
    texts = [b.text for m in msgs if isinstance(m, sdk.AssistantMessage) for b in m.content
             if isinstance(b, sdk.TextBlock)]
    assert texts == ["Hi from ds4"]
    assert result[0].usage["input_tokens"] + result[0].usage.get("cache_read_input_tokens", 0) > 1000
    m = server.metrics()
    assert m['ds4_http_requests_total{endpoint="/v1/messages",status="200"}'] >= 1


def test_claude_code_runs_a_tool(start_server, tmp_path):
    """The model calls Claude Code's own Read tool; the CLI runs it and sends the
    result back, and the server takes that turn too (the script calls Read
    again, so the run ends at max_turns)."""
    secret = tmp_path / "note.txt"
    secret.write_text("the secret word is ds4-owl\n", encoding="utf-8")
    reply = ("I should read the file.</think>\n\n<｜DSML｜tool_calls>\n"
             '<｜DSML｜invoke name="Read">\n'
             f'<｜DSML｜parameter name="file_path" string="true">{secret}</｜DSML｜parameter>\n'
             "</｜DSML｜invoke>\n</｜DSML｜tool_calls>")
    server = scripted(start_server, tmp_path, reply)
    msgs, err = run_claude(server, tmp_path, "What is in note.txt?", max_turns=2, allowed_tools=["Read"])
    assert err is None or "maximum number of turns" in str(err), err
    uses = [b for m in msgs if isinstance(m, sdk.AssistantMessage) for b in m.content if isinstance(b, sdk.ToolUseBlock)]
    assert uses and uses[0].name == "Read" and uses[0].input == {"file_path": str(secret)}
    assert uses[0].id.startswith("toolu_")
    results = [b for m in msgs if isinstance(m, sdk.UserMessage) and isinstance(m.content, list) for b in m.content
               if isinstance(b, sdk.ToolResultBlock)]
    assert results and results[0].tool_use_id == uses[0].id and "ds4-owl" in str(results[0].content)
    result = [m for m in msgs if isinstance(m, sdk.ResultMessage)]
    assert len(result) == 1 and result[0].subtype == "error_max_turns", result
    m = server.metrics()
    assert m['ds4_http_requests_total{endpoint="/v1/messages",status="200"}'] >= 2
    assert not any(k.startswith("ds4_http_requests_total") and 'status="4' in k for k in m), m
    # The second request replays the first turn (thinking, tool_use) after a
    # billing header that changed: the first turn's session is still reused.
    assert m["ds4_prefix_reuse_hits_total"] >= 1, m
    assert m["ds4_prompt_tokens_cached_total"] > 10000, m
