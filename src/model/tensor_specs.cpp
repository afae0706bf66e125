#include "model/tensor_specs.h"

#include <fmt/format.h>

#include "util/error.h"

namespace ds4::model {

#define DS4_GSLOT(field) [](ModelWeights& mw, uint32_t) -> Weight& { return mw.field; }
#define DS4_LSLOT(field) [](ModelWeights& mw, uint32_t li) -> Weight& { return mw.layers[li].field; }

std::vector<TensorSpec> tensor_specs(const ModelConfig& c) {
  std::vector<TensorSpec> v;
  using R = TensorRole;
  using Slot = Weight& (*)(ModelWeights&, uint32_t);
  const int64_t D = c.n_embd, V = c.n_vocab, H = c.n_head, hd = c.head_dim, hc = c.hc_count, mix = c.hc_mix_rows();
  uint32_t layer = 0;
  auto add = [&](std::string name, std::vector<int64_t> ne, R role, std::vector<std::string> sources, Slot slot,
                 bool required = true) {
    TensorSpec t;
    t.name = std::move(name);
    t.ne = std::move(ne);
    t.role = role;
    t.sources = std::move(sources);
    t.required = required;
    t.layer = layer;
    t.slot = slot;
    v.push_back(std::move(t));
  };
  add("token_embd.weight", {D, V}, R::matrix, {"embed.weight", "embed_tokens.weight"}, DS4_GSLOT(token_embd));
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    layer = l;
    const std::string p = fmt::format("blk.{}.", l), o = fmt::format("layers.{}.", l);
    add(p + "hc_attn_fn.weight", {hc * D, mix}, R::matrix, {o + "hc_attn_fn"}, DS4_LSLOT(hc_attn_fn));
    add(p + "hc_attn_scale.weight", {3}, R::hc_scale, {o + "hc_attn_scale"}, DS4_LSLOT(hc_attn_scale));
    add(p + "hc_attn_base.weight", {mix}, R::hc_base, {o + "hc_attn_base"}, DS4_LSLOT(hc_attn_base));
    add(p + "attn_norm.weight", {D}, R::norm, {o + "attn_norm.weight"}, DS4_LSLOT(attn_norm));
    add(p + "attn_q_a.weight", {D, c.q_lora_rank}, R::matrix, {o + "attn.wq_a.weight"}, DS4_LSLOT(q_a));
    add(p + "attn_q_a_norm.weight", {c.q_lora_rank}, R::norm, {o + "attn.q_norm.weight"}, DS4_LSLOT(q_a_norm));
    add(p + "attn_q_b.weight", {c.q_lora_rank, H * hd}, R::matrix, {o + "attn.wq_b.weight"}, DS4_LSLOT(q_b));
    add(p + "attn_kv.weight", {D, hd}, R::matrix, {o + "attn.wkv.weight"}, DS4_LSLOT(kv));
    add(p + "attn_kv_a_norm.weight", {hd}, R::norm, {o + "attn.kv_norm.weight", o + "attn.norm.weight"},
        DS4_LSLOT(kv_norm));
    add(p + "attn_sinks.weight", {H}, R::sinks, {o + "attn.attn_sink"}, DS4_LSLOT(sinks));
    add(p + "attn_output_a.weight", {c.heads_per_group() * hd, int64_t{c.o_groups} * c.o_lora_rank}, R::matrix,
        {o + "attn.wo_a.weight"}, DS4_LSLOT(out_a));
    add(p + "attn_output_b.weight", {int64_t{c.o_groups} * c.o_lora_rank, D}, R::matrix, {o + "attn.wo_b.weight"},
        DS4_LSLOT(out_b));
    const uint32_t r = c.compress_ratios[l];
    if (r != 0) {
      const int64_t w = (r == 4 ? 2 : 1) * hd;
      add(p + "attn_compressor_ape.weight", {w, r}, R::ape, {o + "attn.compressor.ape"}, DS4_LSLOT(compressor.ape));
      add(p + "attn_compressor_kv.weight", {D, w}, R::matrix, {o + "attn.compressor.wkv.weight"}, DS4_LSLOT(compressor.kv));
      add(p + "attn_compressor_gate.weight", {D, w}, R::matrix, {o + "attn.compressor.wgate.weight"},
          DS4_LSLOT(compressor.gate));
      add(p + "attn_compressor_norm.weight", {hd}, R::norm,
          {o + "attn.compressor.norm.weight", o + "attn.compressor.kv_norm.weight"}, DS4_LSLOT(compressor.norm));
    }
    if (r == 4) {
      const int64_t id = c.indexer_head_dim;
      add(p + "indexer.attn_q_b.weight", {c.q_lora_rank, int64_t{c.indexer_heads} * id}, R::matrix,
          {o + "attn.indexer.wq_b.weight"}, DS4_LSLOT(indexer_q_b));
      add(p + "indexer.proj.weight", {D, c.indexer_heads}, R::matrix, {o + "attn.indexer.weights_proj.weight"},
          DS4_LSLOT(indexer_proj));
      add(p + "indexer_compressor_ape.weight", {2 * id, 4}, R::ape, {o + "attn.indexer.compressor.ape"},
          DS4_LSLOT(indexer_compressor.ape));
      add(p + "indexer_compressor_kv.weight", {D, 2 * id}, R::matrix, {o + "attn.indexer.compressor.wkv.weight"},
          DS4_LSLOT(indexer_compressor.kv));
      add(p + "indexer_compressor_gate.weight", {D, 2 * id}, R::matrix, {o + "attn.indexer.compressor.wgate.weight"},
          DS4_LSLOT(indexer_compressor.gate));
      add(p + "indexer_compressor_norm.weight", {id}, R::norm, {o + "attn.indexer.compressor.norm.weight"},
          DS4_LSLOT(indexer_compressor.norm));
    }
    add(p + "hc_ffn_fn.weight", {hc * D, mix}, R::matrix, {o + "hc_ffn_fn"}, DS4_LSLOT(hc_ffn_fn));
    add(p + "hc_ffn_scale.weight", {3}, R::hc_scale, {o + "hc_ffn_scale"}, DS4_LSLOT(hc_ffn_scale));
    add(p + "hc_ffn_base.weight", {mix}, R::hc_base, {o + "hc_ffn_base"}, DS4_LSLOT(hc_ffn_base));
    add(p + "ffn_norm.weight", {D}, R::norm, {o + "ffn_norm.weight"}, DS4_LSLOT(ffn_norm));
    add(p + "ffn_gate_inp.weight", {D, c.n_expert}, R::matrix, {o + "ffn.gate.weight"}, DS4_LSLOT(gate_inp));
    // Hash layers select experts by token id and need no selection bias; a
    // checkpoint may still carry one (it is then converted, and unused).
    const bool hash = c.is_hash_layer(l);
    add(p + "exp_probs_b.bias", {c.n_expert}, R::router_bias, {o + "ffn.gate.bias", o + "ffn.gate.e_score_correction_bias"},
        DS4_LSLOT(exp_probs_b), !hash);
    if (hash)
      add(p + "ffn_gate_tid2eid.weight", {c.n_expert_used, V}, R::tid2eid, {o + "ffn.gate.tid2eid"}, DS4_LSLOT(tid2eid));
    const int64_t F = c.expert_ff, E = c.n_expert;
    add(p + "ffn_gate_exps.weight", {D, F, E}, R::matrix, {o + "ffn.experts.{}.w1.weight"}, DS4_LSLOT(gate_exps));
    add(p + "ffn_up_exps.weight", {D, F, E}, R::matrix, {o + "ffn.experts.{}.w3.weight"}, DS4_LSLOT(up_exps));
    add(p + "ffn_down_exps.weight", {F, D, E}, R::matrix, {o + "ffn.experts.{}.w2.weight"}, DS4_LSLOT(down_exps));
    for (size_t k = v.size() - 3; k < v.size(); ++k) v[k].per_expert = true;
    if (c.n_expert_shared > 0) {
      const int64_t S = c.shared_ff();
      add(p + "ffn_gate_shexp.weight", {D, S}, R::matrix, {o + "ffn.shared_experts.w1.weight"}, DS4_LSLOT(gate_shexp));
      add(p + "ffn_up_shexp.weight", {D, S}, R::matrix, {o + "ffn.shared_experts.w3.weight"}, DS4_LSLOT(up_shexp));
      add(p + "ffn_down_shexp.weight", {S, D}, R::matrix, {o + "ffn.shared_experts.w2.weight"}, DS4_LSLOT(down_shexp));
    }
  }
  layer = 0;
  add("output_hc_fn.weight", {hc * D, hc}, R::matrix, {"hc_head_fn", "hc_head.hc_fn"}, DS4_GSLOT(output_hc_fn));
  add("output_hc_base.weight", {hc}, R::hc_base, {"hc_head_base", "hc_head.hc_base"}, DS4_GSLOT(output_hc_base));
  add("output_hc_scale.weight", {1}, R::hc_scale, {"hc_head_scale", "hc_head.hc_scale"}, DS4_GSLOT(output_hc_scale));
  add("output_norm.weight", {D}, R::norm, {"norm.weight"}, DS4_GSLOT(output_norm));
  add("output.weight", {D, V}, R::matrix, {"head.weight", "lm_head.weight"}, DS4_GSLOT(output));
  return v;
}

#undef DS4_GSLOT
#undef DS4_LSLOT

ModelConfig preset_config(const std::string& name) {
  ModelConfig c;
  const bool flash = name == "flash", pro = name == "pro", tiny = name == "tiny";
  if (!flash && !pro && !tiny) fail("synth: unknown shape '{}' (tiny, flash, pro or a config.json path)", name);
  c.n_layer = tiny ? 4 : flash ? 43 : 61;
  c.n_embd = tiny ? 256 : flash ? 4096 : 7168;
  c.n_vocab = tiny ? 512 : 129280;
  c.n_head = tiny ? 4 : flash ? 64 : 128;
  c.head_dim = tiny ? 64 : 512;
  c.rope_dim = tiny ? 16 : 64;
  c.q_lora_rank = tiny ? 64 : flash ? 1024 : 1536;
  c.o_groups = tiny ? 2 : flash ? 8 : 16;
  c.o_lora_rank = tiny ? 32 : 1024;
  c.n_expert = tiny ? 8 : flash ? 256 : 384;
  c.n_expert_used = tiny ? 2 : 6;
  c.n_expert_shared = 1;
  c.expert_ff = tiny ? 256 : flash ? 2048 : 3072;
  c.n_hash_layers = tiny ? 2 : 3;
  c.sliding_window = tiny ? 8 : 128;
  c.indexer_heads = tiny ? 8 : 64;
  c.indexer_head_dim = tiny ? 32 : 128;
  c.indexer_top_k = tiny ? 4 : flash ? 512 : 1024;
  c.hc_count = 4;
  c.sinkhorn_iters = 20;
  c.hc_eps = 1e-6f;
  c.rms_eps = 1e-6f;
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    if (tiny)
      c.compress_ratios.push_back(l == 0 ? 0 : (l % 2 ? 4 : 16));
    else if (l < 2)
      c.compress_ratios.push_back(flash ? 0 : 128);
    else
      c.compress_ratios.push_back(l % 2 == 0 ? 4 : 128);
  }
  c.swiglu_clamp.assign(c.n_layer, 10.0f);
  c.rope_base = 10000;
  c.compress_rope_base = 160000;
  c.yarn_factor = 16;
  c.yarn_orig_ctx = 65536;
  c.yarn_beta_fast = 32;
  c.yarn_beta_slow = 1;
  c.expert_weights_scale = pro ? 2.5f : 1.5f;
  c.expert_weights_norm = true;
  c.context_length = 1048576;
  c.validate();
  return c;
}

}  // namespace ds4::model
