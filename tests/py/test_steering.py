"""Directional steering (docs/steering.md) checked with numpy as the
independent reference: the projection ds4 applies to a captured layer output,
the direction `ds4 steer build` computes from captured prompt sets, and the
flag errors."""
import json

import gguf
import numpy as np
import pytest

from conftest import run
from test_run import make_model


@pytest.fixture(scope="module")
def model(ds4_bin, tmp_path_factory):
    return make_model(ds4_bin, tmp_path_factory)


@pytest.fixture(scope="module")
def shape(model):
    # Read with gguf-py, not ds4.
    r = gguf.GGUFReader(model)
    get = lambda k: int(r.fields[k].parts[r.fields[k].data[0]][0])
    return get("deepseek4.block_count"), get("deepseek4.embedding_length")


def capture(ds4_bin, model, shape, tmp_path, prompt, *flags, component="ffn"):
    out = tmp_path / f"cap-{abs(hash((prompt, flags, component)))}.f32"
    run([ds4_bin, "steer", "capture", "-m", model, "-p", prompt, "--component", component, "-o", str(out),
         "-t", "2", *flags])
    a = np.fromfile(out, dtype="<f4")
    L, D = shape
    assert a.size == 2 * L * D
    return a[: L * D].reshape(L, D).astype(np.float64), a[L * D:].reshape(L, D).astype(np.float64)


def random_dirs(shape, seed, path):
    d = np.random.default_rng(seed).standard_normal(shape)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    d.astype("<f4").tofile(path)
    return d.astype(np.float32).astype(np.float64)


@pytest.mark.parametrize("component,flag,scale", [("ffn", "--dir-steering-ffn", 0.8),
                                                  ("attn", "--dir-steering-attn", -1.5)])
def test_projection_matches_numpy(ds4_bin, model, shape, tmp_path, component, flag, scale):
    d = random_dirs(shape, 7, tmp_path / "dirs.f32")
    pre, post = capture(ds4_bin, model, shape, tmp_path, "Tell me about rivers.",
                        "--dir-steering-file", str(tmp_path / "dirs.f32"), flag, str(scale), component=component)
    want = pre - scale * d * np.sum(d * pre, axis=1, keepdims=True)
    scale_ref = np.abs(pre).max(axis=1, keepdims=True) + 1e-30
    assert np.max(np.abs(post - want) / scale_ref) < 1e-5
    # Steering really acted, in the direction the sign says.
    assert np.all(np.abs(np.sum(d * post, axis=1)) != np.abs(np.sum(d * pre, axis=1)))


def test_file_alone_steers_ffn_with_scale_one(ds4_bin, model, shape, tmp_path):
    d = random_dirs(shape, 8, tmp_path / "dirs.f32")
    pre, post = capture(ds4_bin, model, shape, tmp_path, "Hi", "--dir-steering-file", str(tmp_path / "dirs.f32"))
    # s = 1 removes the direction entirely.
    assert np.max(np.abs(np.sum(d * post, axis=1))) < 1e-5 * np.abs(pre).max()


def test_build_matches_numpy_reference(ds4_bin, model, shape, tmp_path):
    good = ["Answer in one word.", "Be brief.", "Reply tersely, please."]
    bad = ["Explain at great length with many details.", "Write a long essay.", "Elaborate as much as possible."]
    (tmp_path / "good.txt").write_text("\n".join(good) + "\n\n")
    (tmp_path / "bad.txt").write_text("\n".join(bad) + "\n")
    out = tmp_path / "dir.f32"
    p = run([ds4_bin, "steer", "build", "-m", model, "--good", str(tmp_path / "good.txt"), "--bad",
             str(tmp_path / "bad.txt"), "-o", str(out), "-t", "2"])
    assert "good prompts 3/3" in p.stderr and "bad prompts 3/3" in p.stderr
    L, D = shape
    built = np.fromfile(out, dtype="<f4").reshape(L, D).astype(np.float64)
    assert np.allclose(np.linalg.norm(built, axis=1), 1.0, atol=1e-5)
    meta = json.loads((tmp_path / "dir.json").read_text())
    assert meta["format"] == "ds4-directional-steering-v1" and meta["shape"] == [L, D]

    # The reference: captures of each prompt, then the documented math in numpy.
    g = np.stack([capture(ds4_bin, model, shape, tmp_path, t)[0] for t in good])
    b = np.stack([capture(ds4_bin, model, shape, tmp_path, t)[0] for t in bad])
    d = g.mean(0) - b.mean(0)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    c = np.concatenate([g, b]).mean(0)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    d -= np.sum(d * c, axis=1, keepdims=True) * c
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    assert np.min(np.sum(d * built, axis=1)) > 0.9999

    # Applying it moves the captured component as the formula says.
    pre, post = capture(ds4_bin, model, shape, tmp_path, good[0], "--dir-steering-file", str(out),
                        "--dir-steering-ffn", "2")
    want = pre - 2 * built * np.sum(built * pre, axis=1, keepdims=True)
    assert np.max(np.abs(post - want)) < 1e-5 * np.abs(pre).max()


@pytest.mark.parametrize("case", ["short", "nan", "no-file", "nan-scale"])
def test_bad_steering_input_is_one_clear_error(ds4_bin, model, shape, tmp_path, case):
    L, D = shape
    f = tmp_path / "d.f32"
    args = []
    if case == "short":
        np.zeros(L * D - 1, dtype="<f4").tofile(f)
        args, want = ["--dir-steering-file", str(f)], "needs exactly"
    elif case == "nan":
        a = np.zeros(L * D, dtype="<f4")
        a[D + 3] = np.nan
        a.tofile(f)
        args, want = ["--dir-steering-file", str(f)], "not finite"
    elif case == "no-file":
        args, want = ["--dir-steering-ffn", "1"], "needs --dir-steering-file"
    else:
        np.zeros(L * D, dtype="<f4").tofile(f)
        args, want = ["--dir-steering-file", str(f), "--dir-steering-attn", "nan"], "finite"
    p = run([ds4_bin, "run", "-m", model, "-p", "hi", "-n", "1", "-t", "2", *args], check=False)
    assert p.returncode != 0
    assert want in p.stderr, p.stderr
    assert "Traceback" not in p.stderr and "terminate" not in p.stderr
