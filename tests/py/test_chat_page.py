"""The chat page of `ds4 serve` (GET /) driven by a real headless Chromium
(Debian's chromium + chromium-driver, through selenium) against the server on
the demo model (random weights; conftest's start_server fixture).

What the page shows is checked against the official OpenAI SDK asking the same
server the same question (greedy, so both runs pick the same tokens): the
streamed reply, the folded thinking, tool calls, the context use.
The stop button must end the reply and free the server's slot (/health).
Screenshots go to pytest's tmp dir; their paths are printed (pytest -s)."""
import json
import os
import pathlib
import re
import shutil
import time

import pytest
import requests
from openai import OpenAI
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys


# A reply the --test-script hook forces: thinking, text, then one DSML tool
# call (the canonical block of docs/ and the chat parser's fixtures).
TOOL_SCRIPT = ("plan</think>Checking.\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"get_weather\">\n"
               "<｜DSML｜parameter name=\"city\" string=\"true\">Paris</｜DSML｜parameter>\n"
               "<｜DSML｜parameter name=\"days\" string=\"false\">3</｜DSML｜parameter>\n"
               "</｜DSML｜invoke>\n</｜DSML｜tool_calls>")
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather forecast",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                   "required": ["city"]}}}]


@pytest.fixture(scope="module")
def server(start_server):
    # This module's own server (not conftest's shared one). One slot, so /health's "active" is this page's request; a context long
    # enough that an unbounded random reply runs until the stop button ends it.
    return start_server(ctx=16384, parallel=1)


@pytest.fixture(scope="module")
def tool_server(start_server, tmp_path_factory):
    script = tmp_path_factory.mktemp("serve-tools") / "reply.txt"
    script.write_text(TOOL_SCRIPT)
    return start_server("--test-script", str(script), ctx=4096, parallel=1)


def health(server):
    return requests.get(server.url + "/health", timeout=10).json()


def find_chrome():
    """Debian's chromium and its chromedriver (scripts/install-deps installs both)."""
    browser = os.environ.get("DS4_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("DS4_CHROMEDRIVER") or shutil.which("chromedriver")
    assert browser and driver, "chromium and chromedriver not found: run scripts/install-deps"
    return browser, driver


@pytest.fixture
def browser():
    binary, driver_path = find_chrome()
    opts = Options()
    opts.binary_location = binary
    # CI: no display, no GPU, 2 cores, a small /dev/shm, and root in a container.
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1280,860", "--force-device-scale-factor=1"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    d.set_page_load_timeout(30)
    yield d
    d.quit()


def wait_for(what, cond, timeout=60, every=0.05):
    deadline = time.time() + timeout
    while True:
        v = cond()
        if v:
            return v
        assert time.time() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(every)


def text_of(el):
    return el.get_attribute("textContent")


class Page:
    def __init__(self, driver, url):
        self.d = driver
        driver.get(url + "/")
        # The page is usable once it knows the model (from /v1/models).
        wait_for("the model's name", lambda: text_of(self.d.find_element(By.ID, "model")) not in ("", "…"), 30)

    def js(self, code, *args):
        return self.d.execute_script(code, *args)

    def by_id(self, i):
        return self.d.find_element(By.ID, i)

    def settings(self, **values):
        """Fills the Settings panel as a user would: open it, type each value."""
        panel = self.d.find_element(By.CSS_SELECTOR, "details.settings")
        if not panel.get_attribute("open"):
            panel.find_element(By.TAG_NAME, "summary").click()
        for field, value in values.items():
            el = self.by_id(field)
            if el.tag_name == "select":
                el.find_element(By.CSS_SELECTOR, f"option[value='{value}']").click()
            else:
                el.clear()
                if value != "":
                    el.send_keys(value)

    def send(self, text):
        box = self.by_id("input")
        box.send_keys(text)
        box.send_keys(Keys.ENTER)
        # A new assistant bubble appears for the reply.
        n = len(self.user_messages())
        wait_for("the message to be sent", lambda: len(self.user_messages()) >= n and self.replies(), 10)

    def user_messages(self):
        return [text_of(e) for e in self.d.find_elements(By.CSS_SELECTOR, ".msg.user .text")]

    def replies(self):
        return self.d.find_elements(By.CSS_SELECTOR, ".msg.assistant")

    def last_reply(self):
        return self.replies()[-1]

    def wait_finished(self, timeout=120):
        return wait_for("the reply to finish", lambda: self.last_reply().get_attribute("data-state"), timeout)

    def reply_parts(self, reply):
        """(reasoning, text, [(tool name, tool arguments)]) as the page shows them."""
        reasoning = reply.find_elements(By.CSS_SELECTOR, "details.thinking .reasoning")
        body = reply.find_elements(By.CSS_SELECTOR, ":scope > .text")
        calls = [(text_of(c.find_element(By.CSS_SELECTOR, ".name")), text_of(c.find_element(By.CSS_SELECTOR, ".args")))
                 for c in reply.find_elements(By.CSS_SELECTOR, ".tool-call")]
        return (text_of(reasoning[0]) if reasoning else "", text_of(body[0]) if body else "", calls)

    def watch_growth(self):
        """Records the shown reply's length at every DOM change, to see it stream."""
        self.js("""
          window.__lengths = [];
          new MutationObserver(() => {
            const r = document.querySelectorAll('.msg.assistant');
            if (r.length) window.__lengths.push(r[r.length - 1].textContent.length);
          }).observe(document.getElementById('messages'), {childList: true, subtree: true, characterData: true});""")

    def growth(self):
        return self.js("return window.__lengths")

    def screenshot(self, path):
        self.d.save_screenshot(str(path))
        print(f"\nchat page screenshot: {path}")


def sdk(server):
    return OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def reasoning_of(message):
    return (message.model_extra or {}).get("reasoning_content") or ""


def model_of(server):
    return requests.get(server.url + "/v1/models", timeout=10).json()["data"][0]


def stream_oracle(server, model, messages, **kw):
    """The same turn through the OpenAI SDK's own SSE client: (reasoning, text, usage)."""
    reasoning, text, usage = "", "", None
    for chunk in sdk(server).chat.completions.create(model=model, messages=messages, stream=True,
                                                     stream_options={"include_usage": True}, **kw):
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            reasoning += (c.delta.model_extra or {}).get("reasoning_content") or ""
            text += c.delta.content or ""
    return reasoning, text, usage


def test_streamed_replies_equal_the_api_and_history_carries_over(server, browser, tmp_path):
    info = model_of(server)
    page = Page(browser, server.url)
    assert info["id"] in text_of(page.by_id("model"))
    # Before any turn: nothing used of the server's context size.
    assert text_of(page.by_id("ctx")) == f"0 / {info['context_length']:,}"
    # Greedy needs thinking off: in thinking mode the server ignores sampling
    # settings (reference-behavior §3.6), so replies would differ run to run.
    page.settings(thinking="off", temperature="0", **{"max-tokens": "40"})
    page.watch_growth()
    greedy = {"temperature": 0, "max_tokens": 40, "extra_body": {"thinking": {"type": "disabled"}}}

    page.send("Hello there")
    assert page.wait_finished() == "done"
    shown1 = page.reply_parts(page.last_reply())
    messages = [{"role": "user", "content": "Hello there"}]
    r1, t1, u1 = stream_oracle(server, info["id"], messages, **greedy)
    assert shown1 == (r1, t1, [])
    assert t1 and u1.completion_tokens == 40
    # The text grew in many steps while the reply streamed, never shrinking.
    lengths = page.growth()
    assert len(set(lengths)) >= 10, lengths
    assert all(a <= b for a, b in zip(lengths, lengths[1:]) if a and b), lengths
    used1 = u1.prompt_tokens + u1.completion_tokens
    assert text_of(page.by_id("ctx")) == f"{used1:,} / {info['context_length']:,}"
    assert re.fullmatch(r"\d+\.\d tok/s", text_of(page.by_id("speed"))), text_of(page.by_id("speed"))
    assert f"{u1.prompt_tokens} prompt tokens" in text_of(page.last_reply())

    # Second turn: the page sends the whole conversation.
    page.send("And now?")
    assert page.wait_finished() == "done"
    shown2 = page.reply_parts(page.last_reply())
    messages += [{"role": "assistant", "content": t1}, {"role": "user", "content": "And now?"}]
    r2, t2, u2 = stream_oracle(server, info["id"], messages, **greedy)
    assert shown2 == (r2, t2, [])
    used2 = u2.prompt_tokens + u2.completion_tokens
    assert u2.prompt_tokens > used1
    assert text_of(page.by_id("ctx")) == f"{used2:,} / {info['context_length']:,}"
    assert page.user_messages() == ["Hello there", "And now?"]

    # A thinking turn: the reasoning streams into a folded block above the text.
    page.settings(thinking="on", **{"max-tokens": "30"})
    page.send("Think first.")
    assert page.wait_finished() == "done"
    reasoning, _, _ = page.reply_parts(page.last_reply())
    details = page.last_reply().find_element(By.CSS_SELECTOR, "details.thinking")
    assert reasoning and details.get_attribute("open") is None
    assert not page.last_reply().find_element(By.CSS_SELECTOR, ".reasoning").is_displayed()
    page.screenshot(tmp_path / "chat_page_conversation.png")


def test_stop_button_ends_the_reply_and_frees_the_slot(server, browser, tmp_path):
    page = Page(browser, server.url)
    assert health(server)["active"] == 0
    page.send("Tell me a very long story.")  # no max tokens: runs until the context is full
    reply = page.last_reply()
    wait_for("the reply to stream", lambda: len(text_of(reply)) > 200, 60)
    assert health(server)["active"] == 1
    assert page.by_id("send").get_attribute("disabled") is not None
    # Still growing: the reply is streaming, not finished.
    before = len(text_of(reply))
    wait_for("the reply to grow", lambda: len(text_of(reply)) > before, 10)
    assert reply.get_attribute("data-state") is None

    page.by_id("stop").click()
    assert page.wait_finished(10) == "stopped"
    stopped_at = len(text_of(reply))
    # The server cancels on its next failed write: the only slot is free again.
    wait_for("the slot to be freed", lambda: health(server)["active"] == 0, 10)
    time.sleep(1.0)
    assert len(text_of(reply)) == stopped_at
    assert "stopped by you" in text_of(reply)
    assert page.by_id("send").get_attribute("disabled") is None
    assert page.by_id("stop").get_attribute("disabled") is not None
    # And the model stopped generating, not only the page showing it.
    m1 = server.metrics()
    time.sleep(1.0)
    m2 = server.metrics()
    assert m1["ds4_active_sessions"] == 0
    assert m2["ds4_generated_tokens_total"] == m1["ds4_generated_tokens_total"]

    # The server goes on serving: the next turn (which carries the stopped
    # reply in its history) runs to its end.
    page.settings(**{"max-tokens": "8"})
    page.send("Shorter, please.")
    assert page.wait_finished() == "done"
    assert "8 generated" in text_of(page.last_reply())
    assert health(server)["active"] == 0
    page.screenshot(tmp_path / "chat_page_stopped.png")


def test_tool_calls_are_shown(tool_server, browser, tmp_path):
    info = model_of(tool_server)
    page = Page(browser, tool_server.url)
    page.settings(tools=json.dumps(TOOLS))
    page.send("Weather in Paris for 3 days?")
    assert page.wait_finished() == "done"
    reasoning, text, calls = page.reply_parts(page.last_reply())

    want = sdk(tool_server).chat.completions.create(
        model=info["id"], messages=[{"role": "user", "content": "Weather in Paris for 3 days?"}], tools=TOOLS)
    m = want.choices[0].message
    assert want.choices[0].finish_reason == "tool_calls"
    assert (reasoning, text) == (reasoning_of(m), m.content or "")
    assert [(n, json.loads(a)) for n, a in calls] == \
        [(c.function.name, json.loads(c.function.arguments)) for c in m.tool_calls]
    assert calls and calls[0][0] == "get_weather"
    assert "tool_calls" in text_of(page.last_reply())  # the finish reason, in the reply's footer
    page.screenshot(tmp_path / "chat_page_tool_call.png")


def test_page_is_self_contained(server):
    r = requests.get(server.url + "/", timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    page = r.text
    assert page == (pathlib.Path(__file__).resolve().parents[2] / "src/server/chat_page.html").read_text()
    # Nothing fetched from anywhere else: no absolute URLs in src/href, and the
    # CSP header keeps the browser to this server.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page, re.I)
    assert "default-src 'none'" in r.headers["Content-Security-Policy"]
    assert "connect-src 'self'" in r.headers["Content-Security-Policy"]


def test_errors_are_shown_and_the_page_recovers(server, browser):
    page = Page(browser, server.url)
    page.settings(tools="not a list", **{"max-tokens": "4"})
    page.send("First")
    assert page.wait_finished(10) == "error"
    assert "JSON" in text_of(page.last_reply().find_element(By.CSS_SELECTOR, ".error"))

    # A request the server refuses: its own 400 message is what the page shows.
    bad_tools = [{"type": "function"}]
    want = requests.post(server.url + "/v1/chat/completions", timeout=30,
                         json={"messages": [{"role": "user", "content": "x"}], "tools": bad_tools})
    assert want.status_code == 400
    page.settings(tools=json.dumps(bad_tools))
    page.send("Second")
    assert page.wait_finished(10) == "error"
    shown = text_of(page.last_reply().find_element(By.CSS_SELECTOR, ".error"))
    assert shown == "HTTP 400: " + want.json()["error"]["message"]

    page.settings(tools="")
    page.send("Third")
    assert page.wait_finished() == "done"
    assert "4 generated" in text_of(page.last_reply())
    assert health(server)["active"] == 0


def test_api_key_is_asked_for_and_kept(start_server, browser):
    s = start_server("--api-key", "s3cret", ctx=4096, parallel=1)
    assert requests.get(s.url + "/v1/models", timeout=10).status_code == 401
    assert requests.get(s.url + "/", timeout=10).status_code == 200  # the page itself is open
    browser.get(s.url + "/")

    def alert():
        try:
            return browser.switch_to.alert
        except Exception:
            return None

    prompt = wait_for("the page to ask for the key", alert, 20)
    prompt.send_keys("s3cret")
    prompt.accept()
    info = requests.get(s.url + "/v1/models", headers={"Authorization": "Bearer s3cret"}, timeout=10).json()
    wait_for("the model's name", lambda: info["data"][0]["id"] in text_of(browser.find_element(By.ID, "model")))
    # Reloaded, the page uses the kept key without asking again.
    page = Page(browser, s.url)
    assert alert() is None
    page.settings(**{"max-tokens": "3"})
    page.send("Hi")
    assert page.wait_finished() == "done"
    assert "3 generated" in text_of(page.last_reply())
