"""`make run` without -m builds the demo model once into the cache folder and
opens the REPL on it; with -m it runs the given model."""
import os
import subprocess

from conftest import BUILD, REPO
from test_run import make_model


def make_run(args, cache, stdin):
    env = dict(os.environ, DS4_CACHE_DIR=str(cache))
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
