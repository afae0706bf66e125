"""Our quantizers against gguf-py.

Types gguf-py can quantize (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, MXFP4, BF16, F16) must
give the same bytes. For the others (Q2_K, Q4_K, Q6_K, IQ2_XXS, where gguf-py
only dequantizes) our output is decoded by gguf-py and the RMS error relative to
the input's RMS must stay within bounds set from measured figures (printed with
-s), and invariants of the format are checked.
"""
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import quants

from conftest import run

ROWLEN = 4096
ROWS = 8


def quantize(tool, tmp_path, qtype, x, imatrix=None):
    x.astype(np.float32).tofile(tmp_path / "x.f32")
    cmd = [tool("quant_tool"), "quant", qtype.name, str(tmp_path / "x.f32"), str(tmp_path / "q.bin")]
    if imatrix is not None:
        imatrix.astype(np.float32).tofile(tmp_path / "im.f32")
        cmd += [str(tmp_path / "im.f32"), str(x.shape[-1])]
    run(cmd)
    return np.fromfile(tmp_path / "q.bin", dtype=np.uint8)


def inputs(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((ROWS, ROWLEN)).astype(np.float32)
    x[1] *= 1e-3                      # small magnitudes
    x[2] = rng.standard_t(3, ROWLEN)  # heavy tails / outliers
    x[3, :512] = 0                    # all-zero blocks
    x[4] = np.abs(x[4])               # one-signed blocks
    x[5] = rng.uniform(-1, 1, ROWLEN)
    return x


@pytest.mark.parametrize("qtype", [T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.MXFP4, T.BF16, T.F16],
                         ids=lambda t: t.name)
def test_quant_equals_gguf_py(qtype, tool, tmp_path):
    x = inputs(7)
    ours = quantize(tool, tmp_path, qtype, x)
    ref = quants.quantize(x, qtype).view(np.uint8).reshape(-1)
    assert ours.shape == ref.shape
    bad = np.flatnonzero(ours != ref)
    assert bad.size == 0, f"{qtype.name}: {bad.size} differing bytes, first at {bad[0]}"


def rel_rms(x, y):
    return float(np.sqrt(np.mean((x - y) ** 2)) / np.sqrt(np.mean(x ** 2)))


# Bounds: measured relative RMS error on gaussian rows plus ~8% headroom.
# Measured: Q2_K 0.2949, Q4_K 0.0716, Q6_K 0.0178, IQ2_XXS 0.3919 (no imatrix:
# weights x^2 favour large values), Q8_0 0.0054.
BOUNDS = {T.Q2_K: 0.32, T.Q4_K: 0.078, T.Q6_K: 0.0195, T.IQ2_XXS: 0.42, T.Q8_0: 0.0059}


@pytest.mark.parametrize("qtype", list(BOUNDS), ids=lambda t: t.name)
def test_roundtrip_error(qtype, tool, tmp_path):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((ROWS, ROWLEN)).astype(np.float32)
    q = quantize(tool, tmp_path, qtype, x)
    y = quants.dequantize(q, qtype).reshape(x.shape)
    err = rel_rms(x, y)
    print(f"\n{qtype.name}: relative RMS error {err:.4f}")
    assert err < BOUNDS[qtype]
    # Never worse than a much cruder baseline in any row: the fit must work row-wise.
    for r in range(ROWS):
        assert rel_rms(x[r], y[r]) < BOUNDS[qtype] * 1.3


@pytest.mark.parametrize("qtype", [T.Q2_K, T.Q4_K, T.Q6_K, T.IQ2_XXS], ids=lambda t: t.name)
def test_special_rows(qtype, tool, tmp_path):
    x = inputs(3)
    q = quantize(tool, tmp_path, qtype, x)
    y = quants.dequantize(q, qtype).reshape(x.shape)
    assert np.all(np.isfinite(y))
    for r in (0, 1, 2, 4, 5):  # scale-invariant error: small rows as good as big ones
        assert rel_rms(x[r], y[r]) < BOUNDS[qtype] * 1.6, r
    if qtype != T.IQ2_XXS:  # IQ2_XXS has no zero level: a zero block decodes to +-d
        assert np.all(y[3, :512] == 0)


def test_iq2_xxs_imatrix_lowers_weighted_error(tool, tmp_path):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((ROWS, 1024)).astype(np.float32)
    imatrix = np.exp(rng.uniform(-3, 3, 1024)).astype(np.float32)  # very uneven importance
    plain = quants.dequantize(quantize(tool, tmp_path, T.IQ2_XXS, x), T.IQ2_XXS).reshape(x.shape)
    weighted = quants.dequantize(quantize(tool, tmp_path, T.IQ2_XXS, x, imatrix), T.IQ2_XXS).reshape(x.shape)
    werr = lambda y: float(np.sum(imatrix * (x - y) ** 2))
    print(f"\nIQ2_XXS weighted error: plain {werr(plain):.1f}, with imatrix {werr(weighted):.1f}")
    assert werr(weighted) < 0.9 * werr(plain)


def test_iq2_xxs_flat_imatrix_rms(tool, tmp_path):
    # A flat importance vector makes the objective close to plain RMS error.
    rng = np.random.default_rng(11)
    x = rng.standard_normal((ROWS, ROWLEN)).astype(np.float32)
    q = quantize(tool, tmp_path, T.IQ2_XXS, x, np.ones(ROWLEN, np.float32))
    err = rel_rms(x, quants.dequantize(q, T.IQ2_XXS).reshape(x.shape))
    print(f"\nIQ2_XXS (flat imatrix): relative RMS error {err:.4f}")
    assert err < 0.36  # measured 0.3316


def test_q8_k_roundtrip(tool, tmp_path):
    # Q8_K (the activation type) has no gguf-py codec: check its invariants.
    rng = np.random.default_rng(9)
    x = rng.standard_normal(1024).astype(np.float32)
    q = quantize(tool, tmp_path, T.Q8_K, x).reshape(4, 292)
    d = q[:, :4].copy().view(np.float32).reshape(-1)
    qs = q[:, 4:260].copy().view(np.int8).astype(np.int32)
    bsums = q[:, 260:].copy().view(np.int16).reshape(4, 16)
    assert np.array_equal(bsums, qs.reshape(4, 16, 16).sum(-1))
    y = (d[:, None] * qs).reshape(-1)
    assert np.max(np.abs(x - y)) <= np.max(np.abs(d)) * 0.5 + 1e-7
    assert np.all(np.abs(qs).max(axis=1) >= 127)


def test_quant_rejects_unsupported(tool, tmp_path):
    np.zeros(256, np.float32).tofile(tmp_path / "x.f32")
    p = run([tool("quant_tool"), "quant", "IQ3_S", str(tmp_path / "x.f32"), str(tmp_path / "o")], check=False)
    assert p.returncode == 1 and "not supported" in p.stderr
