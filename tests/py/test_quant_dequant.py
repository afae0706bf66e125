"""Every supported GGML type: our dequantizer equals gguf-py's bit for bit.

Blocks are random bytes with their f16/e8m0 scale fields overwritten by sane
finite values (random bytes would often be NaN/inf scales, which tell nothing).
"""
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import quants
from gguf.constants import GGML_QUANT_SIZES

from conftest import run

# type -> byte offsets of f16 scale fields inside one block (besides IQ1_M's
# split scale, handled below).
F16_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
    T.IQ2_XXS: [0], T.IQ2_XS: [0], T.IQ2_S: [0], T.IQ3_XXS: [0], T.IQ3_S: [0],
    T.IQ1_S: [0], T.IQ4_NL: [0], T.IQ4_XS: [0],
}
TYPES = list(F16_FIELDS) + [T.IQ1_M, T.MXFP4, T.BF16, T.F16, T.F32]
N_BLOCKS = 64


def sane_f16(rng, n):
    # Magnitudes 1e-4..10 with random sign; includes some f16 subnormals.
    mag = np.exp(rng.uniform(np.log(1e-7), np.log(10.0), n)).astype(np.float16)
    sign = np.where(rng.random(n) < 0.5, -1, 1).astype(np.float16)
    return (mag * sign).view(np.uint8).reshape(n, 2)


def random_blocks(qtype, rng):
    bs, ts = GGML_QUANT_SIZES[qtype]
    if qtype in (T.F32, T.F16, T.BF16):
        n = N_BLOCKS * 32
        vals = (rng.standard_normal(n) * 3).astype(np.float32)
        if qtype == T.F32:
            return vals.view(np.uint8).copy()
        if qtype == T.F16:
            return vals.astype(np.float16).view(np.uint8).copy()
        return quants.quantize(vals, T.BF16).view(np.uint8).reshape(-1).copy()
    b = rng.integers(0, 256, size=(N_BLOCKS, ts), dtype=np.uint8)
    for off in F16_FIELDS.get(qtype, []):
        b[:, off:off + 2] = sane_f16(rng, N_BLOCKS)
    if qtype == T.IQ1_M:
        # f16 scale split over the top nibbles of the 4 scale words (bytes 48..55).
        d = sane_f16(rng, N_BLOCKS).view(np.uint16).reshape(-1)
        w = b[:, 48:56].copy().view(np.uint16)
        for k in range(4):
            w[:, k] = (w[:, k] & 0x0FFF) | (((d >> (4 * k)) & 0xF) << 12)
        b[:, 48:56] = w.view(np.uint8)
    if qtype == T.MXFP4:
        b[:, 0] = rng.integers(100, 150, N_BLOCKS)  # e8m0 exponents around 1
    return b.reshape(-1)


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_dequant_matches_gguf_py(qtype, tool, tmp_path):
    rng = np.random.default_rng(1234 + int(qtype))
    data = random_blocks(qtype, rng)
    (tmp_path / "in.bin").write_bytes(data.tobytes())
    run([tool("quant_tool"), "dequant", qtype.name, str(tmp_path / "in.bin"), str(tmp_path / "out.f32")])
    ours = np.fromfile(tmp_path / "out.f32", dtype=np.float32)
    ref = quants.dequantize(data, qtype).astype(np.float32).reshape(-1)
    assert ours.shape == ref.shape
    assert np.all(np.isfinite(ref))
    mism = np.flatnonzero(ours.view(np.uint32) != ref.view(np.uint32))
    assert mism.size == 0, f"{qtype.name}: {mism.size} mismatches, first at {mism[0]}: {ours[mism[0]]} vs {ref[mism[0]]}"


def test_dequant_rejects_bad_size(tool, tmp_path):
    (tmp_path / "in.bin").write_bytes(b"\0" * 35)
    p = run([tool("quant_tool"), "dequant", "Q8_0", str(tmp_path / "in.bin"), str(tmp_path / "o")], check=False)
    assert p.returncode == 1 and "not a multiple of 34" in p.stderr


def test_unsupported_type_names_tensor(tool, tmp_path):
    (tmp_path / "in.bin").write_bytes(b"\0" * 64)
    p = run([tool("quant_tool"), "dequant", "TQ1_0", str(tmp_path / "in.bin"), str(tmp_path / "o")], check=False)
    assert p.returncode == 1 and "is not supported" in p.stderr and "in.bin" in p.stderr
