"""Our safetensors reader against files written by the `safetensors` package
(with ml_dtypes for bfloat16 and float8), single-file and sharded."""
import json

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import run

RNG = np.random.default_rng(7)

ARRAYS = {
    "f64": RNG.standard_normal((3, 5)),
    "f32": RNG.standard_normal((4, 6)).astype(np.float32),
    "f16": RNG.standard_normal((2, 8)).astype(np.float16),
    "bf16": RNG.standard_normal((5, 3)).astype(ml_dtypes.bfloat16),
    # every e4m3fn code, NaN included
    "f8_e4m3": np.arange(256, dtype=np.uint8).view(ml_dtypes.float8_e4m3fn),
    "f8_e5m2": np.arange(256, dtype=np.uint8).view(ml_dtypes.float8_e5m2),
    "i64": RNG.integers(-1000, 1000, (3, 3)).astype(np.int64),
    "i32": RNG.integers(-1000, 1000, (7,)).astype(np.int32),
    "i16": RNG.integers(-1000, 1000, (2, 2)).astype(np.int16),
    "i8": RNG.integers(-128, 128, (9,)).astype(np.int8),
    "u8": RNG.integers(0, 256, (2, 4)).astype(np.uint8),
    "bool": RNG.integers(0, 2, (5,)).astype(bool),
}
DTYPE = {"f64": "F64", "f32": "F32", "f16": "F16", "bf16": "BF16", "f8_e4m3": "F8_E4M3",
         "f8_e5m2": "F8_E5M2", "i64": "I64", "i32": "I32", "i16": "I16", "i8": "I8", "u8": "U8",
         "bool": "BOOL"}


def listing(tool, path):
    return json.loads(run([tool("st_dump"), str(path)]).stdout)


def values(tool, path, name, tmp_path):
    out = tmp_path / f"{name}.f32"
    run([tool("st_dump"), str(path), name, str(out)])
    return np.fromfile(out, dtype="<f4")


def test_single_file_every_dtype(tmp_path, tool):
    path = tmp_path / "model.safetensors"
    save_file(ARRAYS, str(path))
    lst = listing(tool, path)
    assert sorted(lst) == sorted(ARRAYS)
    for name, arr in ARRAYS.items():
        assert lst[name]["dtype"] == DTYPE[name]
        assert lst[name]["shape"] == list(arr.shape)
        got = values(tool, path, name, tmp_path)
        want = arr.astype(np.float32).reshape(-1)
        np.testing.assert_array_equal(got, want, err_msg=name)


def test_sharded_index(tmp_path, tool):
    a = {k: ARRAYS[k] for k in ["f32", "bf16", "i64"]}
    b = {k: ARRAYS[k] for k in ["f16", "u8"]}
    save_file(a, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file(b, str(tmp_path / "model-00002-of-00002.safetensors"))
    weight_map = {k: "model-00001-of-00002.safetensors" for k in a}
    weight_map.update({k: "model-00002-of-00002.safetensors" for k in b})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    lst = listing(tool, tmp_path)  # a folder: finds the index
    assert sorted(lst) == sorted(weight_map)
    for k, f in weight_map.items():
        assert lst[k]["file"].endswith(f)
    np.testing.assert_array_equal(values(tool, tmp_path, "bf16", tmp_path), ARRAYS["bf16"].astype(np.float32).ravel())


@pytest.mark.parametrize("case,needle", [
    ("short", "only 3 bytes"),
    ("hlen", "exceeds the file size"),
    ("json", "not valid JSON"),
    ("offsets", "outside the data section"),
    ("span", "needs 16 bytes but data_offsets span 8"),
    ("dtype", "unsupported dtype 'X9'"),
])
def test_malformed(tmp_path, tool, case, needle):
    def file(header, data=b"\0" * 16):
        h = json.dumps(header).encode()
        return len(h).to_bytes(8, "little") + h + data
    p = tmp_path / "bad.safetensors"
    good = {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}
    content = {
        "short": b"abc",
        "hlen": (10 ** 9).to_bytes(8, "little") + b"{}",
        "json": (5).to_bytes(8, "little") + b"{oops",
        "offsets": file({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 64]}}),
        "span": file({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}),
        "dtype": file({"w": {"dtype": "X9", "shape": [4], "data_offsets": [0, 16]}}),
    }[case]
    p.write_bytes(content)
    res = run([tool("st_dump"), str(p)], check=False)
    assert res.returncode == 1
    assert needle in res.stderr and str(p) in res.stderr, res.stderr
    assert file(good)  # the helper itself builds valid files


def test_index_missing_tensor(tmp_path, tool):
    save_file({"a": ARRAYS["f32"]}, str(tmp_path / "s1.safetensors"))
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors"}}))
    res = run([tool("st_dump"), str(tmp_path)], check=False)
    assert res.returncode == 1 and "'b'" in res.stderr and "missing" in res.stderr
