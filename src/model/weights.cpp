#include "model/weights.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "util/error.h"

namespace ds4::model {

size_t Weight::row_bytes() const { return quant::row_bytes(type, cols()); }

Weight Weight::slice(int64_t e) const {
  Weight w;
  w.name = fmt::format("{}[expert {}]", name, e);
  w.type = type;
  w.ne = {ne[0], ne[1]};
  w.ops = ops;
  w.data = data + static_cast<size_t>(e) * static_cast<size_t>(ne[1]) * row_bytes();
  return w;
}

std::vector<float> Weight::to_f32() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  std::vector<float> out(static_cast<size_t>(n));
  const int64_t r = n / cols();
  for (int64_t i = 0; i < r; ++i) ops->dequantize_row(row(i), out.data() + i * cols(), cols());
  return out;
}

namespace {

struct Binder {
  const gguf::File& f;

  // `float_only`: small vectors the forward reads as plain floats.
  // `int_table`: an I32 lookup table (tid2eid), read directly, not through the registry.
  Weight bind(const std::string& name, std::vector<int64_t> ne, bool required = true, bool float_only = false,
              bool int_table = false) {
    const gguf::TensorInfo* t = f.find_tensor(name);
    Weight w;
    w.name = name;
    if (!t) {
      if (required) fail("model: missing tensor '{}' (expected shape {})", name, fmt::format("[{}]", fmt::join(ne, ", ")));
      return w;
    }
    if (t->ne != ne)
      fail("model: tensor '{}' has shape {}, expected {}", name, t->shape_string(), fmt::format("[{}]", fmt::join(ne, ", ")));
    w.type = t->type;
    w.ne = t->ne;
    w.data = t->data;
    if (int_table) {
      if (t->type != GgmlType::I32)
        fail("model: tensor '{}' has type {}, expected I32", name, ggml_type_name(t->type));
      return w;
    }
    w.ops = &quant::require_ops(t->type, name);
    if (float_only && t->type != GgmlType::F32 && t->type != GgmlType::F16 && t->type != GgmlType::BF16)
      fail("model: tensor '{}' has type {}, expected F32, F16 or BF16", name, ggml_type_name(t->type));
    return w;
  }
};

}  // namespace

ModelWeights bind_weights(const gguf::File& f, const ModelConfig& c) {
  Binder b{f};
  const int64_t D = c.n_embd, V = c.n_vocab, H = c.n_head, hd = c.head_dim, hc = c.hc_count;
  const int64_t mix = c.hc_mix_rows();
  ModelWeights w;
  w.token_embd = b.bind("token_embd.weight", {D, V});
  w.output_hc_fn = b.bind("output_hc_fn.weight", {hc * D, hc});
  w.output_hc_base = b.bind("output_hc_base.weight", {hc}, true, true);
  w.output_hc_scale = b.bind("output_hc_scale.weight", {1}, true, true);
  w.output_norm = b.bind("output_norm.weight", {D}, true, true);
  w.output = b.bind("output.weight", {D, V});
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    const std::string p = fmt::format("blk.{}.", l);
    LayerWeights L;
    L.hc_attn_fn = b.bind(p + "hc_attn_fn.weight", {hc * D, mix});
    L.hc_attn_scale = b.bind(p + "hc_attn_scale.weight", {3}, true, true);
    L.hc_attn_base = b.bind(p + "hc_attn_base.weight", {mix}, true, true);
    L.attn_norm = b.bind(p + "attn_norm.weight", {D}, true, true);
    L.q_a = b.bind(p + "attn_q_a.weight", {D, c.q_lora_rank});
    L.q_a_norm = b.bind(p + "attn_q_a_norm.weight", {c.q_lora_rank}, true, true);
    L.q_b = b.bind(p + "attn_q_b.weight", {c.q_lora_rank, H * hd});
    L.kv = b.bind(p + "attn_kv.weight", {D, hd});
    L.kv_norm = b.bind(p + "attn_kv_a_norm.weight", {hd}, true, true);
    L.sinks = b.bind(p + "attn_sinks.weight", {H}, true, true);
    L.out_a = b.bind(p + "attn_output_a.weight", {c.heads_per_group() * hd, int64_t{c.o_groups} * c.o_lora_rank});
    L.out_b = b.bind(p + "attn_output_b.weight", {int64_t{c.o_groups} * c.o_lora_rank, D});
    const uint32_t r = c.compress_ratios[l];
    if (r != 0) {
      const int64_t width = (r == 4 ? 2 : 1) * hd;
      L.compressor.ape = b.bind(p + "attn_compressor_ape.weight", {width, r}, true, true);
      L.compressor.kv = b.bind(p + "attn_compressor_kv.weight", {D, width});
      L.compressor.gate = b.bind(p + "attn_compressor_gate.weight", {D, width});
      L.compressor.norm = b.bind(p + "attn_compressor_norm.weight", {hd}, true, true);
    }
    if (r == 4) {
      const int64_t id = c.indexer_head_dim, iw = 2 * id;
      L.indexer_q_b = b.bind(p + "indexer.attn_q_b.weight", {c.q_lora_rank, int64_t{c.indexer_heads} * id});
      L.indexer_proj = b.bind(p + "indexer.proj.weight", {D, c.indexer_heads});
      L.indexer_compressor.ape = b.bind(p + "indexer_compressor_ape.weight", {iw, 4}, true, true);
      L.indexer_compressor.kv = b.bind(p + "indexer_compressor_kv.weight", {D, iw});
      L.indexer_compressor.gate = b.bind(p + "indexer_compressor_gate.weight", {D, iw});
      L.indexer_compressor.norm = b.bind(p + "indexer_compressor_norm.weight", {id}, true, true);
    }
    L.hc_ffn_fn = b.bind(p + "hc_ffn_fn.weight", {hc * D, mix});
    L.hc_ffn_scale = b.bind(p + "hc_ffn_scale.weight", {3}, true, true);
    L.hc_ffn_base = b.bind(p + "hc_ffn_base.weight", {mix}, true, true);
    L.ffn_norm = b.bind(p + "ffn_norm.weight", {D}, true, true);
    L.gate_inp = b.bind(p + "ffn_gate_inp.weight", {D, c.n_expert});
    const bool hash = c.is_hash_layer(l);
    // Hash layers select by token id; OFF has no selection bias there, so the
    // bias is optional everywhere and unused on hash layers.
    L.exp_probs_b = b.bind(p + "exp_probs_b.bias", {c.n_expert}, false, true);
    if (hash) {
      L.tid2eid = b.bind(p + "ffn_gate_tid2eid.weight", {c.n_expert_used, V}, true, false, true);
    }
    const int64_t F = c.expert_ff, E = c.n_expert;
    L.gate_exps = b.bind(p + "ffn_gate_exps.weight", {D, F, E});
    L.up_exps = b.bind(p + "ffn_up_exps.weight", {D, F, E});
    L.down_exps = b.bind(p + "ffn_down_exps.weight", {F, D, E});
    if (c.n_expert_shared > 0) {
      const int64_t S = c.shared_ff();
      L.gate_shexp = b.bind(p + "ffn_gate_shexp.weight", {D, S});
      L.up_shexp = b.bind(p + "ffn_up_shexp.weight", {D, S});
      L.down_shexp = b.bind(p + "ffn_down_shexp.weight", {S, D});
    }
    w.layers.push_back(std::move(L));
  }
  return w;
}

std::shared_ptr<Model> Model::load(const std::string& path) {
  auto m = std::make_shared<Model>();
  m->file = std::make_shared<gguf::File>(gguf::File::open(path));
  m->config = ModelConfig::from_gguf(*m->file);
  m->weights = bind_weights(*m->file, m->config);
  // tid2eid entries index experts: check them once here rather than per token.
  for (uint32_t l = 0; l < m->config.n_layer; ++l) {
    const Weight& t = m->weights.layers[l].tid2eid;
    if (!t.present()) continue;
    const auto* ids = reinterpret_cast<const int32_t*>(t.data);
    const int64_t n = t.ne[0] * t.ne[1];
    for (int64_t i = 0; i < n; ++i)
      if (ids[i] < 0 || static_cast<uint32_t>(ids[i]) >= m->config.n_expert)
        fail("model: tensor '{}' entry {} = {} is not an expert id (expert_count {})", t.name, i, ids[i],
             m->config.n_expert);
  }
  return m;
}

}  // namespace ds4::model
