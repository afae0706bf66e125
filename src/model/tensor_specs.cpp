#include "model/tensor_specs.h"

#include <fmt/format.h>

#include "util/error.h"

namespace ds4::model {

std::vector<TensorSpec> tensor_specs(const ModelConfig& c) {
  std::vector<TensorSpec> v;
  using R = TensorRole;
  const int64_t D = c.n_embd, V = c.n_vocab, H = c.n_head, hd = c.head_dim, hc = c.hc_count, mix = c.hc_mix_rows();
  v.push_back({"token_embd.weight", {D, V}, R::matrix});
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    const std::string p = fmt::format("blk.{}.", l);
    for (const char* sub : {"attn", "ffn"}) {
      v.push_back({p + "hc_" + sub + "_fn.weight", {hc * D, mix}, R::matrix});
      v.push_back({p + "hc_" + sub + "_scale.weight", {3}, R::hc_scale});
      v.push_back({p + "hc_" + sub + "_base.weight", {mix}, R::hc_base});
    }
    v.push_back({p + "attn_norm.weight", {D}, R::norm});
    v.push_back({p + "attn_q_a.weight", {D, c.q_lora_rank}, R::matrix});
    v.push_back({p + "attn_q_a_norm.weight", {c.q_lora_rank}, R::norm});
    v.push_back({p + "attn_q_b.weight", {c.q_lora_rank, H * hd}, R::matrix});
    v.push_back({p + "attn_kv.weight", {D, hd}, R::matrix});
    v.push_back({p + "attn_kv_a_norm.weight", {hd}, R::norm});
    v.push_back({p + "attn_sinks.weight", {H}, R::sinks});
    v.push_back({p + "attn_output_a.weight", {c.heads_per_group() * hd, int64_t{c.o_groups} * c.o_lora_rank}, R::matrix});
    v.push_back({p + "attn_output_b.weight", {int64_t{c.o_groups} * c.o_lora_rank, D}, R::matrix});
    const uint32_t r = c.compress_ratios[l];
    if (r != 0) {
      const int64_t w = (r == 4 ? 2 : 1) * hd;
      v.push_back({p + "attn_compressor_ape.weight", {w, r}, R::ape});
      v.push_back({p + "attn_compressor_kv.weight", {D, w}, R::matrix});
      v.push_back({p + "attn_compressor_gate.weight", {D, w}, R::matrix});
      v.push_back({p + "attn_compressor_norm.weight", {hd}, R::norm});
    }
    if (r == 4) {
      const int64_t id = c.indexer_head_dim;
      v.push_back({p + "indexer.attn_q_b.weight", {c.q_lora_rank, int64_t{c.indexer_heads} * id}, R::matrix});
      v.push_back({p + "indexer.proj.weight", {D, c.indexer_heads}, R::matrix});
      v.push_back({p + "indexer_compressor_ape.weight", {2 * id, 4}, R::ape});
      v.push_back({p + "indexer_compressor_kv.weight", {D, 2 * id}, R::matrix});
      v.push_back({p + "indexer_compressor_gate.weight", {D, 2 * id}, R::matrix});
      v.push_back({p + "indexer_compressor_norm.weight", {id}, R::norm});
    }
    v.push_back({p + "ffn_norm.weight", {D}, R::norm});
    v.push_back({p + "ffn_gate_inp.weight", {D, c.n_expert}, R::matrix});
    if (c.is_hash_layer(l))
      v.push_back({p + "ffn_gate_tid2eid.weight", {c.n_expert_used, V}, R::tid2eid});
    else
      v.push_back({p + "exp_probs_b.bias", {c.n_expert}, R::router_bias});
    const int64_t F = c.expert_ff, E = c.n_expert;
    v.push_back({p + "ffn_gate_exps.weight", {D, F, E}, R::matrix});
    v.push_back({p + "ffn_up_exps.weight", {D, F, E}, R::matrix});
    v.push_back({p + "ffn_down_exps.weight", {F, D, E}, R::matrix});
    if (c.n_expert_shared > 0) {
      const int64_t S = c.shared_ff();
      v.push_back({p + "ffn_gate_shexp.weight", {D, S}, R::matrix});
      v.push_back({p + "ffn_up_shexp.weight", {D, S}, R::matrix});
      v.push_back({p + "ffn_down_shexp.weight", {S, D}, R::matrix});
    }
  }
  v.push_back({"output_hc_fn.weight", {hc * D, hc}, R::matrix});
  v.push_back({"output_hc_base.weight", {hc}, R::hc_base});
  v.push_back({"output_hc_scale.weight", {1}, R::hc_scale});
  v.push_back({"output_norm.weight", {D}, R::norm});
  v.push_back({"output.weight", {D, V}, R::matrix});
  return v;
}

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
