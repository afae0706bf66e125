"""`make run` without -m builds the demo model once into the cache folder and
opens the REPL on it, its replies bounded and the way to a real model shown;
with -m it runs the given model; after `ds4 pull` it runs the pulled one."""
import os
import re
import shutil
import subprocess

from conftest import BUILD, REPO
from test_run import make_model


def make_run(args, cache, stdin, config=None):
    # XDG_CONFIG_HOME: no default model from a real `ds4 pull` on this machine.
    env = dict(os.environ, DS4_CACHE_DIR=str(cache), XDG_CONFIG_HOME=str(config or cache / "config"))
    # BUILD points make at the already-built tree, so only ds4 is (re)checked.
    return subprocess.run(["make", "-s", "run", f"BUILD={BUILD}", "JOBS=2", f"ARGS={args}"], cwd=REPO, env=env,
                          input=stdin, capture_output=True, text=True, timeout=300)


def test_make_run_demo_reaches_repl_and_caches_model(tmp_path):
    cache = tmp_path / "cache"
    p = make_run("-n 3 --nothink -t 2", cache, "hello\n/quit\n")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "building the demo model" in p.stderr
    assert "RANDOM weights" in p.stderr
    assert "ds4> " in p.stdout and "Commands:" in p.stdout
    assert "ds4: prefill:" in p.stderr
    models = list(cache.glob("demo-v4-random-*.gguf"))
    assert len(models) == 1 and not list(cache.glob("*.tmp*"))
    stamp = models[0].stat().st_mtime_ns
    q = make_run("-n 2 --nothink -t 2", cache, "/quit\n")
    assert q.returncode == 0 and "building the demo model" not in q.stderr
    assert models[0].stat().st_mtime_ns == stamp  # reused, not rebuilt


def test_make_run_with_model_argument(ds4_bin, tmp_path_factory, tmp_path):
    model = make_model(ds4_bin, tmp_path_factory)
    p = make_run(f"-m {model} -p hi -n 2 --nothink --temp 0 -t 2", tmp_path / "unused", "")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "ds4: prefill:" in p.stderr
    assert not (tmp_path / "unused").exists()


def test_make_run_demo_reply_is_bounded_and_shows_the_hint(tmp_path):
    # No -n: the demo's own limit applies. A fixed seed keeps the run the same
    # each time; the reply must end by the limit or by an end of text.
    p = make_run("-t 2 --seed 7", tmp_path / "cache", "What is the capital of France?\n")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "RANDOM weights" in p.stderr and "cut at 200 tokens" in p.stderr
    assert re.search(r"ds4: +\S*ds4 pull q2-imatrix", p.stderr), p.stderr
    counts = [int(n) for n in re.findall(r"generation: [\d.]+ t/s \((\d+) tokens\)", p.stderr)]
    assert len(counts) == 1 and 0 < counts[0] <= 200, p.stderr
    if counts[0] == 200:
        assert "ds4: [stopped: 200-token limit]" in p.stderr
    # The reply on stdout is bounded too (a 200-token reply, not 32768).
    assert len(p.stdout) < 200 * 64
    # An explicit -n wins over the demo's limit.
    q = make_run("-t 2 --seed 7 -n 5", tmp_path / "cache", "hi\n")
    assert q.returncode == 0 and "cut at" not in q.stderr
    assert re.search(r"\(5 tokens\)", q.stderr) and "ds4: [stopped: 5-token limit]" in q.stderr


def test_make_run_uses_the_pulled_default_model(ds4_bin, tmp_path_factory, tmp_path):
    model = str(tmp_path / "pulled.gguf")  # a copy: the shared model stays for other tests
    shutil.copyfile(make_model(ds4_bin, tmp_path_factory), model)
    config = tmp_path / "config"
    (config / "ds4").mkdir(parents=True)
    (config / "ds4" / "default-model").write_text(model + "\n")  # as `ds4 pull` leaves it
    p = make_run("-p hi -n 2 --nothink --temp 0 -t 2", tmp_path / "cache", "", config)
    assert p.returncode == 0, p.stderr[-2000:]
    assert f"ds4: using {model}" in p.stderr
    assert "building the demo model" not in p.stderr and "RANDOM weights" not in p.stderr
    assert "(2 tokens)" in p.stderr
    os.remove(model)
    q = make_run("-n 2 --nothink -t 2", tmp_path / "cache", "/quit\n", config)
    assert q.returncode == 0 and "is gone: using the demo model" in q.stderr
