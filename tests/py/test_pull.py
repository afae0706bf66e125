"""`ds4 pull` against a local HTTP server on 127.0.0.1 (range_server.py; no
internet): a full download, an interrupted transfer resumed (bytes equal), a
wrong checksum rejected, a 404, a refused connection, a multi-part model, a
gated file, a full disk, and the default model that `ds4 run` then uses."""
import hashlib
import os
import pty
import re
import socket
import subprocess
import time

import pytest

from range_server import RangeServer
from test_run import make_model

MIB = 1 << 20


def blob(n, seed):
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}:{i}".encode()).digest()
        i += 1
    return bytes(out[:n])


@pytest.fixture
def server():
    with RangeServer() as s:
        yield s


@pytest.fixture
def env(tmp_path):
    e = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "DS4_GGUF_DIR")}
    e["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    e["HF_HOME"] = str(tmp_path / "hf")  # no token file there
    return e


def pull(ds4_bin, env, *args, cwd=None):
    return subprocess.run([ds4_bin, "pull", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def record(tmp_path):
    p = tmp_path / "config" / "ds4" / "default-model"
    return p.read_text().strip() if p.exists() else None


def error_lines(stderr):
    return [ln for ln in stderr.splitlines() if ln.startswith("ds4: error:")]


def test_full_download_verified_and_made_default(ds4_bin, server, env, tmp_path):
    data = blob(3 * MIB + 17, "full")
    server.add("/org/repo/resolve/main/model.gguf", data).redirect = True
    out = tmp_path / "models"
    p = pull(ds4_bin, env, server.url("/org/repo/resolve/main/model.gguf"), "-o", str(out))
    assert p.returncode == 0, p.stderr
    assert (out / "model.gguf").read_bytes() == data
    assert not list(out.glob("*.part"))
    assert "verified: size and SHA-256" in p.stderr
    assert "100%" in p.stderr  # the plain progress lines of a non-terminal stderr
    assert record(tmp_path) == str(out / "model.gguf")
    # Present already: nothing is requested again.
    n = len(server.log)
    q = pull(ds4_bin, env, server.url("/org/repo/resolve/main/model.gguf"), "-o", str(out))
    assert q.returncode == 0 and "already there" in q.stderr and len(server.log) == n


def test_progress_on_a_terminal_is_one_line_with_rate_and_eta(ds4_bin, server, env, tmp_path):
    data = blob(MIB, "tty")
    server.add("/t.gguf", data).chunk_delay = 0.1  # 16 chunks: about 1.6 s
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(ds4_bin, [ds4_bin, "pull", server.url("/t.gguf"), "-o", str(tmp_path)], env)
    out = b""
    end = time.monotonic() + 60
    while time.monotonic() < end:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    text = out.decode("utf-8", "replace")
    assert os.WEXITSTATUS(status) == 0, text
    # Redrawn in place: carriage return + erase-line before each state.
    frames = text.split("\r\x1b[2K")
    assert len(frames) >= 3, text
    assert re.search(r"t\.gguf: \[#*\.*\] \d+% [\d.]+ KiB of 1\.0 MiB, [\d.]+ KiB/s, ETA \d+s", text), text
    assert "[########################] 100% 1.0 MiB of 1.0 MiB" in text
    assert (tmp_path / "t.gguf").read_bytes() == data


def test_default_output_dir_is_gguf_or_env(ds4_bin, server, env, tmp_path):
    server.add("/a.gguf", blob(1000, "a"))
    p = pull(ds4_bin, env, server.url("/a.gguf"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "gguf" / "a.gguf").read_bytes() == blob(1000, "a")
    env["DS4_GGUF_DIR"] = str(tmp_path / "elsewhere")
    p = pull(ds4_bin, env, server.url("/a.gguf"), cwd=tmp_path)
    assert p.returncode == 0 and (tmp_path / "elsewhere" / "a.gguf").exists()


def test_interrupted_then_resumed(ds4_bin, server, env, tmp_path):
    data = blob(4 * MIB, "resume")
    f = server.add("/m.gguf", data)
    f.cut_after, f.cuts_left = MIB + 5, 1
    p = pull(ds4_bin, env, server.url("/m.gguf"), "-o", str(tmp_path), "--retries", "0")
    assert p.returncode == 1
    errs = error_lines(p.stderr)
    assert len(errs) == 1 and "transfer cut" in errs[0] and "run the same command again to resume" in errs[0]
    part = tmp_path / "m.gguf.part"
    assert part.read_bytes() == data[: MIB + 5]
    assert not (tmp_path / "m.gguf").exists() and record(tmp_path) is None
    q = pull(ds4_bin, env, server.url("/m.gguf"), "-o", str(tmp_path))
    assert q.returncode == 0, q.stderr
    assert server.log[-1][1] == f"bytes={MIB + 5}-"  # only the rest was asked for
    assert (tmp_path / "m.gguf").read_bytes() == data and not part.exists()


def test_cut_transfer_resumed_within_one_run(ds4_bin, server, env, tmp_path):
    data = blob(2 * MIB, "retry")
    f = server.add("/r.gguf", data)
    f.cut_after, f.cuts_left = 300000, 2
    p = pull(ds4_bin, env, server.url("/r.gguf"), "-o", str(tmp_path), "--retries", "2")
    assert p.returncode == 0, p.stderr
    assert p.stderr.count("resuming in") == 2
    assert [r for _, r, _ in server.log] == [None, "bytes=300000-", "bytes=300000-"]
    assert (tmp_path / "r.gguf").read_bytes() == data


def test_server_without_range_support_starts_over(ds4_bin, server, env, tmp_path):
    data = blob(MIB, "norange")
    server.add("/n.gguf", data).ranges = False
    (tmp_path / "n.gguf.part").write_bytes(b"stale bytes from some other file")
    p = pull(ds4_bin, env, server.url("/n.gguf"), "-o", str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert "downloading from the start" in p.stderr
    assert (tmp_path / "n.gguf").read_bytes() == data


def test_complete_part_is_finished_without_a_body(ds4_bin, server, env, tmp_path):
    data = blob(5000, "whole")
    server.add("/w.gguf", data)
    (tmp_path / "w.gguf.part").write_bytes(data)
    p = pull(ds4_bin, env, server.url("/w.gguf"), "-o", str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert server.log[-1][1] == "bytes=5000-"  # answered 416: nothing after 5000
    assert (tmp_path / "w.gguf").read_bytes() == data


@pytest.mark.parametrize("redirect", [False, True])
def test_wrong_checksum_from_server_rejected_and_part_removed(ds4_bin, server, env, tmp_path, redirect):
    f = server.add("/bad.gguf", blob(MIB, "bad"))
    f.sha = hashlib.sha256(b"something else").hexdigest()
    f.redirect = redirect
    p = pull(ds4_bin, env, server.url("/bad.gguf"), "-o", str(tmp_path))
    assert p.returncode == 1
    errs = error_lines(p.stderr)
    assert len(errs) == 1 and "SHA-256 mismatch" in errs[0] and f.sha in errs[0], p.stderr
    assert hashlib.sha256(blob(MIB, "bad")).hexdigest() in errs[0]
    assert not list(tmp_path.glob("bad.gguf*"))  # documented: the .part is removed
    assert record(tmp_path) is None


def test_explicit_sha256(ds4_bin, server, env, tmp_path):
    data = blob(MIB, "explicit")
    server.add("/e.gguf", data).sha = None  # the server states no hash
    wrong = pull(ds4_bin, env, server.url("/e.gguf"), "-o", str(tmp_path), "--sha256", "0" * 64)
    assert wrong.returncode == 1 and "SHA-256 mismatch" in wrong.stderr
    assert not (tmp_path / "e.gguf").exists()
    ok = pull(ds4_bin, env, server.url("/e.gguf"), "-o", str(tmp_path), "--sha256", hashlib.sha256(data).hexdigest().upper())
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "e.gguf").read_bytes() == data
    bad = pull(ds4_bin, env, server.url("/e.gguf"), "-o", str(tmp_path / "x"), "--sha256", "abc")
    assert bad.returncode == 1 and error_lines(bad.stderr) == ["ds4: error: --sha256 abc: not 64 hex digits"]


def test_no_hash_stated_means_size_only(ds4_bin, server, env, tmp_path):
    server.add("/s.gguf", blob(1234, "s")).sha = None
    p = pull(ds4_bin, env, server.url("/s.gguf"), "-o", str(tmp_path))
    assert p.returncode == 0 and "verified: size)" in p.stderr


def test_404_is_one_clear_error(ds4_bin, server, env, tmp_path):
    p = pull(ds4_bin, env, server.url("/missing.gguf"), "-o", str(tmp_path))
    assert p.returncode == 1
    assert error_lines(p.stderr) == [f"ds4: error: {server.url('/missing.gguf')}: not found (HTTP 404)"]
    assert not list(tmp_path.glob("missing*"))


def test_refused_connection_is_one_clear_error(ds4_bin, env, tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    url = f"http://127.0.0.1:{port}/m.gguf"
    p = pull(ds4_bin, env, url, "-o", str(tmp_path))
    assert p.returncode == 1
    assert error_lines(p.stderr) == [f"ds4: error: {url}: cannot connect to 127.0.0.1:{port}: Connection refused"]


def test_multi_part_model_fetches_every_part(ds4_bin, server, env, tmp_path):
    parts = {i: blob(MIB // 2 + i, f"part{i}") for i in (1, 2, 3)}
    for i, d in parts.items():
        server.add(f"/big/M-Q2-{i:05d}-of-00003.gguf", d).redirect = True
    # Naming any part fetches them all.
    p = pull(ds4_bin, env, server.url("/big/M-Q2-00002-of-00003.gguf"), "-o", str(tmp_path))
    assert p.returncode == 0, p.stderr
    for i, d in parts.items():
        assert (tmp_path / f"M-Q2-{i:05d}-of-00003.gguf").read_bytes() == d
    assert record(tmp_path) == str(tmp_path / "M-Q2-00001-of-00003.gguf")
    assert p.stderr.count("verified: size and SHA-256") == 3


def test_gated_file_needs_a_token(ds4_bin, server, env, tmp_path):
    data = blob(4096, "gated")
    f = server.add("/g.gguf", data)
    f.token, f.redirect = "s3cret", True
    p = pull(ds4_bin, env, server.url("/g.gguf"), "-o", str(tmp_path))
    assert p.returncode == 1
    errs = error_lines(p.stderr)
    assert len(errs) == 1 and "access denied (HTTP 401)" in errs[0] and "HF_TOKEN" in errs[0]
    wrong = pull(ds4_bin, env, server.url("/g.gguf"), "-o", str(tmp_path), "--token", "nope")
    assert wrong.returncode == 1 and "the token given was refused" in wrong.stderr
    ok = pull(ds4_bin, dict(env, HF_TOKEN="s3cret"), server.url("/g.gguf"), "-o", str(tmp_path / "env"))
    assert ok.returncode == 0, ok.stderr
    ok = pull(ds4_bin, env, server.url("/g.gguf"), "-o", str(tmp_path / "flag"), "--token", "s3cret")
    assert ok.returncode == 0, ok.stderr
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "token").write_text("s3cret\n")  # what huggingface-cli login leaves
    ok = pull(ds4_bin, env, server.url("/g.gguf"), "-o", str(tmp_path / "file"))
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "flag" / "g.gguf").read_bytes() == data
    # The token went to the first URL only, not to where it redirected.
    assert all(auth is None for path, _, auth in server.log if path.startswith("/storage/"))


def test_full_disk_is_one_clear_error(ds4_bin, server, env, tmp_path):
    server.add("/d.gguf", blob(MIB, "disk"))
    os.symlink("/dev/full", tmp_path / "d.gguf.part")  # every write fails with ENOSPC
    p = pull(ds4_bin, env, server.url("/d.gguf"), "-o", str(tmp_path))
    assert p.returncode == 1
    errs = error_lines(p.stderr)
    assert len(errs) == 1 and "No space left on device" in errs[0], p.stderr


def test_too_little_space_is_refused_before_writing(ds4_bin, server, env, tmp_path):
    server.add("/huge.gguf", blob(100, "huge")).claim_size = 10**18
    p = pull(ds4_bin, env, server.url("/huge.gguf"), "-o", str(tmp_path))
    assert p.returncode == 1
    errs = error_lines(p.stderr)
    assert len(errs) == 1 and "disk full: huge.gguf needs" in errs[0], p.stderr
    assert not (tmp_path / "huge.gguf.part").exists()


@pytest.mark.parametrize("args,message", [
    (["nosuch"], "unknown model name 'nosuch': known names are q2-imatrix, q4-imatrix, q2, q4, mtp"),
    ([], "give a model name"),
    (["ftp://h/x.gguf"], "only http:// and https:// URLs can be pulled"),
    (["http://h/x.bin"], "the URL does not name a .gguf file"),
    (["http://h/x.gguf", "--retries", "-1"], "invalid value for --retries"),
])
def test_bad_arguments(ds4_bin, env, tmp_path, args, message):
    p = pull(ds4_bin, env, *args, "-o", str(tmp_path))
    assert p.returncode == 1
    errs = error_lines(p.stderr)
    assert len(errs) == 1 and message in errs[0], p.stderr


def test_list_names_the_known_files(ds4_bin, env):
    p = pull(ds4_bin, env, "--list")
    assert p.returncode == 0
    names = [ln.split()[0] for ln in p.stdout.splitlines() if not ln.startswith(" ")]
    assert names == ["q2-imatrix", "q4-imatrix", "q2", "q4", "mtp"]
    assert "https://huggingface.co/antirez/deepseek-v4-gguf/resolve/main/DeepSeek-V4-Flash-" in p.stdout


def test_run_without_model_uses_the_pulled_one(ds4_bin, server, env, tmp_path, tmp_path_factory):
    with open(make_model(ds4_bin, tmp_path_factory), "rb") as fh:
        server.add("/tiny.gguf", fh.read())
    none = subprocess.run([ds4_bin, "run", "-p", "hi"], env=env, capture_output=True, text=True, timeout=60)
    assert none.returncode == 1 and "ds4 pull q2-imatrix" in none.stderr
    p = pull(ds4_bin, env, server.url("/tiny.gguf"), "-o", str(tmp_path))
    assert p.returncode == 0, p.stderr
    r = subprocess.run([ds4_bin, "run", "-p", "hi", "-n", "2", "--nothink", "--temp", "0", "-t", "2"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "ds4: prefill:" in r.stderr
    os.remove(tmp_path / "tiny.gguf")
    gone = subprocess.run([ds4_bin, "run", "-p", "hi"], env=env, capture_output=True, text=True, timeout=60)
    assert gone.returncode == 1 and "is gone" in gone.stderr
