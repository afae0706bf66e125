"""ds4 convert: tokenizer embedding, recipes' tensor types (checked with gguf-py)
and clear errors for bad checkpoints."""
import json
import struct
import shutil

import pytest
from gguf import GGUFReader

from conftest import REPO, run
from test_forward_reference import FIXTURES, convert_cached


def pad_rows(path, rows):
    """Rewrites a safetensors file with its vocabulary-sized tensors (embedding, head, tid2eid) zero-padded to `rows` rows (raw bytes, so
    BF16 needs no numpy type)."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    out, meta, at = [], {}, 0
    for k, v in sorted(((k, v) for k, v in header.items() if k != "__metadata__"), key=lambda kv: kv[1]["data_offsets"]):
        b = data[v["data_offsets"][0]:v["data_offsets"][1]]
        if len(v["shape"]) == 2 and v["shape"][0] == 512:  # embedding, head, tid2eid
            b += bytes(len(b) // 512 * (rows - 512))
            v = dict(v, shape=[rows, v["shape"][1]])
        meta[k] = dict(v, data_offsets=[at, at + len(b)])
        out.append(b)
        at += len(b)
    if "__metadata__" in header:
        meta["__metadata__"] = header["__metadata__"]
    h = json.dumps(meta).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(out))


def test_tokenizer_larger_than_vocab_is_an_error(ds4_bin, tmp_path):
    """The V4 tokenizer (129280 tokens) cannot go into the tiny model (vocab 512): ids past 511 have no embedding."""
    out = tmp_path / "t.gguf"
    tok = REPO / "data" / "tokenizer" / "deepseek-v4" / "tokenizer.json"
    p = run([ds4_bin, "convert", str(FIXTURES / "tiny"), "-o", str(out), "--recipe", "f16", "--tokenizer", str(tok)],
            check=False)
    assert p.returncode != 0
    assert "has 129280 tokens but the model's vocabulary (vocab_size) is 512" in p.stderr, p.stderr
    assert not out.exists()


def test_embeds_tokenizer(ds4_bin, tmp_path):
    """A checkpoint whose vocabulary holds the V4 tokenizer: the tiny fixture with its embedding and head padded
    to 129280 rows."""
    src = tmp_path / "hf"
    shutil.copytree(FIXTURES / "tiny", src)
    cfg = json.loads((src / "config.json").read_text())
    cfg["vocab_size"] = 129280
    (src / "config.json").write_text(json.dumps(cfg))
    (src / "reference.safetensors").unlink()
    for f in src.glob("model*.safetensors"):
        pad_rows(f, 129280)
    out = tmp_path / "t.gguf"
    tok = REPO / "data" / "tokenizer" / "deepseek-v4" / "tokenizer.json"
    run([ds4_bin, "convert", str(src), "-o", str(out), "--recipe", "f16", "--tokenizer", str(tok)])
    r = GGUFReader(str(out))
    assert "tokenizer.ggml.tokens" in r.fields and "tokenizer.ggml.merges" in r.fields
    assert len(r.fields["tokenizer.ggml.tokens"].data) == 129280
    assert r.fields["deepseek4.vocab_size"].parts[-1][0] == 129280


@pytest.mark.parametrize("recipe,types", [
    ("f32", {"blk.2.ffn_gate_exps.weight": "F32", "token_embd.weight": "F32"}),
    ("bf16", {"blk.2.ffn_gate_exps.weight": "BF16", "blk.0.attn_norm.weight": "F32"}),
    ("q8_0", {"blk.2.ffn_gate_exps.weight": "Q8_0", "blk.0.attn_q_a.weight": "Q8_0", "token_embd.weight": "F16",
              "blk.1.indexer.proj.weight": "F16", "blk.0.hc_attn_fn.weight": "F16", "blk.0.ffn_gate_tid2eid.weight": "I32"}),
    ("ds4-q2", {"blk.2.ffn_gate_exps.weight": "IQ2_XXS", "blk.2.ffn_down_exps.weight": "Q2_K", "output.weight": "Q8_0",
                # 128-wide rows cannot hold a 256-block... but Q8_0 (32) fits
                "blk.0.attn_output_a.weight": "Q8_0"}),
    ("ds4-q4", {"blk.2.ffn_up_exps.weight": "Q4_K", "blk.2.ffn_down_exps.weight": "Q4_K"}),
])
def test_recipe_types(ds4_bin, tmp_path, recipe, types):
    out = convert_cached(ds4_bin, "tiny", recipe)
    got = {t.name: t.tensor_type.name for t in GGUFReader(str(out)).tensors}
    for name, want in types.items():
        assert got[name] == want, (name, got[name], want)


def test_block_fallback_is_logged(ds4_bin, tmp_path):
    """A 64-wide row cannot take a 256-element block: Q4_K falls back, with a log line."""
    # indexer_compressor_kv rows are 256 wide, attn_kv_a_norm 64 (F32 anyway); synth a shape with 64-wide expert rows
    cfg = json.loads((FIXTURES / "tiny" / "config.json").read_text())
    cfg["moe_intermediate_size"] = 64
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "f.gguf"
    p = run([ds4_bin, "synth", "--shape", str(tmp_path / "config.json"), "--recipe", "ds4-q4", "-o", str(out)])
    assert "ffn_down_exps" in p.stderr and "Q4_K not possible" in p.stderr
    got = {t.name: t.tensor_type.name for t in GGUFReader(str(out)).tensors}
    assert got["blk.2.ffn_down_exps.weight"] == "Q8_0"
    assert got["blk.2.ffn_gate_exps.weight"] == "Q4_K"


def test_missing_tensor_is_named(ds4_bin, tmp_path):
    src = tmp_path / "ck"
    shutil.copytree(FIXTURES / "tiny", src)
    name = "model.layers.2.attn.compressor.wgate.weight"
    idx = json.loads((src / "model.safetensors.index.json").read_text())
    shard = src / idx["weight_map"].pop(name)
    (src / "model.safetensors.index.json").write_text(json.dumps(idx))
    # rename the tensor inside its shard (rewrite the JSON header)
    raw = shard.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    header["renamed.weight"] = header.pop(name)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    shard.chmod(0o644)
    shard.write_bytes(len(h).to_bytes(8, "little") + h + raw[8 + n:])
    p = run([ds4_bin, "convert", str(src), "-o", str(tmp_path / "x.gguf"), "--recipe", "f32"], check=False)
    assert p.returncode != 0
    assert "blk.2.attn_compressor_gate.weight" in p.stderr and "layers.2.attn.compressor.wgate.weight" in p.stderr


def test_mismatched_config_is_named(ds4_bin, tmp_path):
    src = tmp_path / "ck"
    shutil.copytree(FIXTURES / "tiny", src)
    cfg = json.loads((src / "config.json").read_text())
    cfg["q_lora_rank"] = 96
    (src / "config.json").write_text(json.dumps(cfg))
    p = run([ds4_bin, "convert", str(src), "-o", str(tmp_path / "x.gguf"), "--recipe", "f32"], check=False)
    assert p.returncode != 0
    assert "wq_a" in p.stderr and "[64, 256]" in p.stderr and "[96, 256]" in p.stderr


def test_unknown_recipe(ds4_bin, tmp_path):
    p = run([ds4_bin, "convert", str(FIXTURES / "tiny"), "-o", str(tmp_path / "x.gguf"), "--recipe", "q3"], check=False)
    assert p.returncode != 0 and "unknown recipe 'q3'" in p.stderr
