"""ds4 synth: random models of a named shape load and run with finite logits,
and a seed always gives the same file."""
import numpy as np
import pytest
from gguf import GGUFReader

from conftest import run


@pytest.mark.parametrize("recipe", ["f32", "q8_0"])
def test_synth_tiny_runs(ds4_bin, tmp_path, recipe):
    a, b, c = (tmp_path / n for n in ("a.gguf", "b.gguf", "c.gguf"))
    run([ds4_bin, "synth", "--shape", "tiny", "--recipe", recipe, "--seed", "5", "-o", str(a)])
    run([ds4_bin, "synth", "--shape", "tiny", "--recipe", recipe, "--seed", "5", "-o", str(b)])
    run([ds4_bin, "synth", "--shape", "tiny", "--recipe", recipe, "--seed", "6", "-o", str(c)])
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    r = GGUFReader(str(a))
    assert r.fields["deepseek4.block_count"].parts[-1][0] == 4
    out = tmp_path / "l.f32"
    run([ds4_bin, "logits", "-m", str(a), "--tokens", ",".join(str(t) for t in range(2, 42)), "-o", str(out), "--chunk", "9"])
    lg = np.fromfile(out, dtype=np.float32).reshape(40, 512)
    assert np.isfinite(lg).all()
    assert 0.1 < lg.std() < 10


def test_synth_layers_and_bad_shape(ds4_bin, tmp_path):
    out = tmp_path / "s.gguf"
    run([ds4_bin, "synth", "--shape", "tiny", "--layers", "2", "--recipe", "f16", "-o", str(out)])
    r = GGUFReader(str(out))
    assert r.fields["deepseek4.block_count"].parts[-1][0] == 2
    p = run([ds4_bin, "synth", "--shape", "huge", "-o", str(out)], check=False)
    assert p.returncode != 0 and "unknown shape 'huge'" in p.stderr
