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
