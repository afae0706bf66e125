"""Writes the GGUF fuzz seeds in tests/fuzz/corpus/gguf/ with gguf-py.

Run once by hand (`.venv/bin/python tests/fuzz/make_seeds.py`); the seeds are
committed so fuzzing needs no Python.
"""
import pathlib

import numpy as np
from gguf import GGUFWriter, GGMLQuantizationType as QT

OUT = pathlib.Path(__file__).parent / "corpus" / "gguf"
OUT.mkdir(parents=True, exist_ok=True)


def write(name, build, alignment=32):
    path = OUT / name
    w = GGUFWriter(str(path), "deepseek4")
    if alignment != 32:
        w.add_custom_alignment(alignment)
    build(w)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def meta(w):
    w.add_uint32("deepseek4.block_count", 2)
    w.add_float32("deepseek4.rope.freq_base", 10000.0)
    w.add_bool("deepseek4.expert_weights_norm", True)
    w.add_string("general.name", "seed")
    w.add_array("deepseek4.attention.compress_ratios", [0, 4])
    w.add_array("tokenizer.ggml.tokens", ["a", "b", "<｜User｜>"])
    w.add_array("nested", [[1, 2], [3]])
    w.add_int64("i64", -5)
    w.add_float64("f64", 0.5)


def tensors(w):
    w.add_tensor("f32", np.arange(8, dtype=np.float32))
    w.add_tensor("f16", np.ones((2, 4), dtype=np.float16))
    q8 = np.zeros((1, 34), dtype=np.uint8)
    w.add_tensor("q8", q8, raw_shape=q8.shape, raw_dtype=QT.Q8_0)
    w.add_tensor("i32", np.arange(12, dtype=np.int32).reshape(2, 6))


write("meta_only.gguf", meta)
write("tensors.gguf", lambda w: (meta(w), tensors(w)))
write("align64.gguf", lambda w: (meta(w), tensors(w)), alignment=64)
write("empty.gguf", lambda w: None)
