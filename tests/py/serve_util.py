"""Start and stop a real `ds4 serve` for tests (shared by the API test files).

The server binds 127.0.0.1 on a free port (--port 0; the port is read from its
"listening on" line) and serves the cached demo model (random weights, real
V4 tokenizer) that scripts/demo-model builds.
"""
import os
import re
import signal
import subprocess
import threading
import time

import requests


def demo_model(repo, ds4_bin):
    p = subprocess.run([str(repo / "scripts" / "demo-model"), ds4_bin, "--print-path"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


class Server:
    def __init__(self, ds4_bin, model, *args, ctx=4096, parallel=4, threads=2):
        cmd = [ds4_bin, "serve", "-m", model, "--port", "0", "--ctx", str(ctx),
               "--parallel", str(parallel), "-t", str(threads), *map(str, args)]
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.log = []
        found = threading.Event()
        self.port = None

        def drain():
            for line in self.proc.stderr:
                self.log.append(line)
                m = re.search(r"listening on http://[^:]+:(\d+)", line)
                if m and not found.is_set():
                    self.port = int(m.group(1))
                    found.set()
            found.set()

        self._drain = threading.Thread(target=drain, daemon=True)
        self._drain.start()
        found.wait(120)
        if self.port is None:
            self.stop()
            raise AssertionError(f"ds4 serve did not start: {cmd}\n{''.join(self.log)}")
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise AssertionError("ds4 serve never answered /health")

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        """SIGINT, then wait; returns the exit code (a crash shows here)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("ds4 serve did not stop within 30 s of SIGINT\n" + "".join(self.log))
        self._drain.join(5)
        return self.proc.returncode

    def metrics(self):
        """/metrics as {name_with_labels: float}."""
        out = {}
        for line in requests.get(self.url + "/metrics", timeout=10).text.splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out
