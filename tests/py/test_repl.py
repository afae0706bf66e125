"""The `ds4 run` REPL: piped stdin, and a real pseudo-terminal for libedit
input, /nothink, multi-turn KV reuse, Ctrl+C during generation and /quit."""
import os
import pty
import re
import select
import signal
import subprocess
import time

import pytest

from conftest import run
from test_run import make_model

ANSI = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]")


@pytest.fixture(scope="module")
def model(ds4_bin, tmp_path_factory):
    return make_model(ds4_bin, tmp_path_factory)


def test_piped_two_turns_reuse_the_live_session(ds4_bin, model, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("Read me.")
    script = f"/help\nhello\n/nothink\nsecond turn\n/read {notes}\n/read /nonexistent\n/bogus\n/quit\n"
    p = subprocess.run([ds4_bin, "run", "-m", model, "--temp", "0", "-n", "3", "-t", "2"], input=script,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("Commands:") == 2
    assert "Thinking mode: none." in p.stdout
    assert "ds4: unknown command: /bogus" in p.stderr and "ds4: type /help for commands" in p.stderr
    assert "ds4: /read: cannot read '/nonexistent'" in p.stderr
    turns = [tuple(map(int, m)) for m in re.findall(r"ds4: turn: (\d+) new tokens to prefill, (\d+) reused", p.stderr)]
    assert len(turns) == 3
    # First turn prefills everything; later turns only their own new tokens,
    # reusing all that the previous turns left in the session.
    assert turns[0][1] == 0
    total = turns[0][0]
    for new, reused in turns[1:]:
        assert reused >= total and new < 20
        total = new + reused
    assert p.stderr.count("ds4: prefill:") == 3


def test_eof_exits_zero(ds4_bin, model):
    p = subprocess.run([ds4_bin, "run", "-m", model], input="", capture_output=True, text=True, timeout=60)
    assert p.returncode == 0


class Pty:
    def __init__(self, argv):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.environ["TERM"] = "xterm"
            os.environ["HOME"] = os.environ.get("TMPDIR", "/tmp")
            os.execv(argv[0], argv)
        self.buf = b""

    def read_until(self, pred, timeout=60):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred(self.text()):
                return self.text()
            r, _, _ = select.select([self.fd], [], [], 0.1)
            if r:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                self.buf += chunk
        assert pred(self.text()), f"timed out; transcript tail:\n{self.text()[-1500:]}"
        return self.text()

    def text(self):
        return ANSI.sub(b"", self.buf).decode("utf-8", "replace").replace("\r", "")

    def send(self, s):
        os.write(self.fd, s.encode())

    def wait(self, timeout=30):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
            try:
                r, _, _ = select.select([self.fd], [], [], 0.1)
                if r:
                    self.buf += os.read(self.fd, 65536)
            except OSError:
                time.sleep(0.05)
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError("process did not exit")


def test_pty_chat_nothink_ctrl_c_and_quit(ds4_bin, model):
    t = Pty([ds4_bin, "run", "-m", model, "--temp", "0", "-n", "100000", "--ctx", "100000", "-t", "2"])
    t.read_until(lambda s: "ds4> " in s)
    t.send("/nothink\r")
    t.read_until(lambda s: "Thinking mode: none." in s and s.count("ds4> ") >= 2)
    # A long generation (100000 tokens would take minutes): interrupt it.
    t.send("tell me everything\r")
    t.read_until(lambda s: "ds4: turn:" in s)
    time.sleep(1.0)
    t.send("\x03")
    t.read_until(lambda s: "ds4: interrupted" in s and s.count("ds4> ") >= 3, timeout=30)
    assert t.text().count("ds4: prefill:") == 1
    # The REPL still works: a second turn continues the same conversation.
    t.send("/ctx 100000\r")
    t.read_until(lambda s: "Context: 100000 tokens." in s)
    t.send("short\r")
    time.sleep(0.5)
    t.send("\x03")
    t.read_until(lambda s: s.count("ds4: prefill:") == 2, timeout=30)
    t.send("/quit\r")
    assert t.wait() == 0


def test_pty_ctrl_c_at_prompt_keeps_repl(ds4_bin, model):
    t = Pty([ds4_bin, "run", "-m", model, "--nothink", "--temp", "0", "-n", "2", "-t", "2"])
    t.read_until(lambda s: "ds4> " in s)
    t.send("\x03")
    time.sleep(0.3)
    t.send("hi\r")
    t.read_until(lambda s: "ds4: prefill:" in s)
    t.send("/quit\r")
    assert t.wait() == 0
