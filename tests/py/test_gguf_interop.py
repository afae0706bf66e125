"""GGUF files cross between our reader/writer and llama.cpp's gguf-py (the oracle).

gguf-py writes files with every metadata type and several tensor types and
alignments; we read them (`ds4 info --json`, `ds4 dump-tensor`) and must see
what gguf-py's own reader sees; our writer re-writes them (`gguf_copy`) and
gguf-py must read back identical metadata and tensor bytes.
"""
import json

import numpy as np
import pytest
from gguf import GGUFReader, GGUFWriter, GGMLQuantizationType as QT, GGUFValueType as VT
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize

from conftest import run

RNG = np.random.default_rng(1234)


def quant_block_bytes(qtype, n_rows, row_len):
    """Random blocks for `qtype` with finite f16 scales at the block start."""
    block, size = GGML_QUANT_SIZES[qtype]
    raw = RNG.integers(0, 256, size=(n_rows, row_len // block, size), dtype=np.uint8)
    # Q8_0 starts with an f16 scale d; Q2_K ends with f16 d, dmin. Keep them finite.
    scales = RNG.uniform(-0.05, 0.05, size=raw.shape[:2]).astype(np.float16).view(np.uint8).reshape(*raw.shape[:2], 2)
    if qtype == QT.Q8_0:
        raw[..., 0:2] = scales
    elif qtype == QT.Q2_K:
        raw[..., 80:82] = scales
        raw[..., 82:84] = scales
    return raw.reshape(n_rows, -1)


def write_with_gguf_py(path, alignment):
    w = GGUFWriter(str(path), "deepseek4")
    if alignment != 32:
        w.add_custom_alignment(alignment)
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4000000000)
    w.add_int32("t.i32", -2000000000)
    w.add_uint64("t.u64", 18000000000000000000)
    w.add_int64("t.i64", -9000000000000000000)
    w.add_float32("t.f32", 1.5e-6)
    w.add_float64("t.f64", 3.141592653589793)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo 世界 <｜User｜>")
    w.add_array("t.arr_f32", [1.0, -2.5, 10.0])
    w.add_array("t.arr_str", ["a", "bb", "｜DSML｜"] * 5)
    w.add_array("t.arr_nested", [[1, 2], [3, 4, 5]])
    w.add_key_value("t.arr_u32", [0, 4, 128], VT.ARRAY, sub_type=VT.UINT32)
    tensors = {
        "f32.weight": RNG.standard_normal((3, 8)).astype(np.float32),
        "f16.weight": RNG.standard_normal((5, 64)).astype(np.float16),
        "i32.weight": RNG.integers(0, 8, size=(7, 6)).astype(np.int32),
    }
    for name, arr in tensors.items():
        w.add_tensor(name, arr)
    q8 = quant_block_bytes(QT.Q8_0, 4, 64)
    w.add_tensor("q8.weight", q8, raw_shape=q8.shape, raw_dtype=QT.Q8_0)
    q2 = quant_block_bytes(QT.Q2_K, 2, 512)
    w.add_tensor("q2k.weight", q2, raw_shape=q2.shape, raw_dtype=QT.Q2_K)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def field_value(reader, key):
    f = reader.fields[key]
    return f.contents()


@pytest.fixture(params=[32, 64, 1, 256], ids=lambda a: f"align{a}")
def pyfile(request, tmp_path):
    path = tmp_path / f"py_{request.param}.gguf"
    write_with_gguf_py(path, request.param)
    return path, request.param


def test_our_reader_sees_what_gguf_py_sees(pyfile, ds4_bin):
    path, alignment = pyfile
    info = json.loads(run([ds4_bin, "info", str(path), "--json"]).stdout)
    r = GGUFReader(str(path))
    assert info["alignment"] == alignment
    assert info["version"] == 3
    ours = info["metadata"]
    theirs = [f for f in r.fields.values() if not f.name.startswith("GGUF.")]
    assert list(ours.keys()) == [f.name for f in theirs]
    for f in theirs:
        mine = ours[f.name]
        assert mine["type"] == {VT.UINT8: "u8", VT.INT8: "i8", VT.UINT16: "u16", VT.INT16: "i16",
                                VT.UINT32: "u32", VT.INT32: "i32", VT.FLOAT32: "f32", VT.BOOL: "bool",
                                VT.STRING: "string", VT.ARRAY: "array", VT.UINT64: "u64",
                                VT.INT64: "i64", VT.FLOAT64: "f64"}[f.types[0]], f.name
        want = f.contents()
        if f.types[:2] == [VT.ARRAY, VT.ARRAY]:
            # gguf-py's contents() flattens nested arrays; compare flattened.
            assert [x for sub in mine["value"] for x in sub] == want
            continue
        if f.types[0] == VT.ARRAY:
            assert mine["count"] == len(want)
            want = want[:8]
        if f.types[0] == VT.FLOAT32:
            assert np.float32(mine["value"]) == np.float32(want)
        else:
            assert mine["value"] == want, f.name
    assert [t["name"] for t in info["tensors"]] == [t.name for t in r.tensors]
    for mine, t in zip(info["tensors"], r.tensors):
        assert mine["type"] == t.tensor_type.name
        assert mine["shape"] == [int(x) for x in t.shape]
        assert mine["offset"] == int(t.data_offset)
        assert mine["bytes"] == int(t.n_bytes)


def test_our_writer_output_reads_identically_in_gguf_py(pyfile, tmp_path, tool):
    path, alignment = pyfile
    out = tmp_path / "copy.gguf"
    run([tool("gguf_copy"), str(path), str(out)])
    a, b = GGUFReader(str(path)), GGUFReader(str(out))
    assert b.alignment == alignment
    fa = {f.name: (f.types, f.contents()) for f in a.fields.values()}
    fb = {f.name: (f.types, f.contents()) for f in b.fields.values()}
    assert fa == fb
    assert [t.name for t in a.tensors] == [t.name for t in b.tensors]
    for ta, tb in zip(a.tensors, b.tensors):
        assert ta.tensor_type == tb.tensor_type
        assert list(ta.shape) == list(tb.shape)
        assert bytes(ta.data.tobytes()) == bytes(tb.data.tobytes()), ta.name
    # Same layout rules on both sides, so the files are byte-identical too.
    assert path.read_bytes() == out.read_bytes()


@pytest.mark.parametrize("name", ["f32.weight", "f16.weight", "q8.weight", "i32.weight"])
def test_dump_tensor_matches_gguf_py_dequantize(pyfile, tmp_path, ds4_bin, name):
    path, _ = pyfile
    out = tmp_path / "t.f32"
    run([ds4_bin, "dump-tensor", str(path), name, "-o", str(out)])
    got = np.fromfile(out, dtype="<f4")
    t = next(t for t in GGUFReader(str(path)).tensors if t.name == name)
    if t.tensor_type == QT.I32:
        want = t.data.astype(np.float32).reshape(-1)
    else:
        want = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(-1)
    np.testing.assert_array_equal(got, want)


def test_info_rejects_corrupt_file(tmp_path, ds4_bin):
    p = tmp_path / "bad.gguf"
    p.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 8)
    res = run([ds4_bin, "info", str(p)], check=False)
    assert res.returncode == 1
    assert res.stderr.count("error") == 1 and str(p) in res.stderr and "byte" in res.stderr


def test_dump_tensor_unknown_name(pyfile, tmp_path, ds4_bin):
    path, _ = pyfile
    res = run([ds4_bin, "dump-tensor", str(path), "nope", "-o", str(tmp_path / "x")], check=False)
    assert res.returncode == 1 and "missing tensor 'nope'" in res.stderr
