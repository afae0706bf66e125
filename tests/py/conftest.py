"""Shared pytest fixtures: where the built binaries and repo data live."""
import os
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("DS4_BUILD_DIR", REPO / "build"))


@pytest.fixture(scope="session")
def repo():
    return REPO


@pytest.fixture(scope="session")
def ds4_bin():
    path = pathlib.Path(os.environ.get("DS4_BIN", BUILD / "src" / "cli" / "ds4"))
    assert path.exists(), f"ds4 binary not built: {path}"
    return str(path)


@pytest.fixture(scope="session")
def tool():
    """Path to a helper program built from tests/tools/<name>.cpp."""

    def find(name):
        path = BUILD / "tools" / name
        assert path.exists(), f"test tool not built: {path}"
        return str(path)

    return find


def run(cmd, check=True, **kw):
    """Run a command, returning CompletedProcess with text output."""
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


@pytest.fixture(scope="session")
def demo_model_path(repo, ds4_bin):
    """The cached demo model (random weights, real tokenizer)."""
    from serve_util import demo_model
    return demo_model(repo, ds4_bin)


@pytest.fixture(scope="session")
def start_server(ds4_bin, demo_model_path):
    """Factory: start_server(*extra_flags, ctx=, parallel=) -> serve_util.Server,
    stopped (and checked for a clean exit) at the end of the session."""
    from serve_util import Server
    started = []

    def start(*args, **kw):
        s = Server(ds4_bin, demo_model_path, *args, **kw)
        started.append(s)
        return s

    yield start
    for s in started:
        rc = s.stop()
        assert rc == 0, f"ds4 serve exited with {rc}\n{''.join(s.log)}"


@pytest.fixture(scope="session")
def server(start_server):
    """A shared ds4 serve on the demo model: 4 slots, 4096 tokens of context."""
    return start_server(ctx=4096, parallel=4)
