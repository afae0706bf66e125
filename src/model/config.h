#pragma once
// Every hyperparameter of a DeepSeek V4 model (model-spec §1), read from the
// `deepseek4.*` GGUF metadata and validated once. Nothing else in the code
// hard-codes a shape: Flash, Pro and the tiny test models all come through here.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "gguf/gguf.h"

namespace ds4::model {

enum class AttentionKind { sliding, csa, hca };

struct ModelConfig {
  uint32_t n_layer = 0;
  uint32_t n_embd = 0;            // D
  uint32_t n_vocab = 0;           // V
  uint32_t n_head = 0;            // H
  uint32_t n_head_kv = 1;
  uint32_t head_dim = 0;          // d_h (K = V)
  uint32_t rope_dim = 0;          // d_r, tail of each head
  uint32_t q_lora_rank = 0;
  uint32_t o_groups = 0;          // G
  uint32_t o_lora_rank = 0;       // r_o per group
  uint32_t n_expert = 0;
  uint32_t n_expert_used = 0;
  uint32_t n_expert_shared = 0;
  uint32_t expert_ff = 0;         // F
  uint32_t n_hash_layers = 0;
  uint32_t sliding_window = 0;
  uint32_t indexer_heads = 0;
  uint32_t indexer_head_dim = 0;
  uint32_t indexer_top_k = 0;
  uint32_t hc_count = 0;          // n_hc
  uint32_t sinkhorn_iters = 0;
  float hc_eps = 0;
  float rms_eps = 0;
  std::vector<uint32_t> compress_ratios;  // one per layer (extra entries dropped)
  std::vector<float> swiglu_clamp;        // one per layer
  float rope_base = 0;
  float compress_rope_base = 0;
  float yarn_factor = 1;
  uint64_t yarn_orig_ctx = 0;
  float yarn_beta_fast = 0;
  float yarn_beta_slow = 0;
  float expert_weights_scale = 1;
  bool expert_weights_norm = true;
  uint64_t context_length = 0;    // display only

  uint32_t nope_dim() const { return head_dim - rope_dim; }
  uint32_t heads_per_group() const { return n_head / o_groups; }
  uint32_t hc_mix_rows() const { return (2 + hc_count) * hc_count; }  // pre, post, comb
  uint32_t shared_ff() const { return expert_ff * n_expert_shared; }
  bool is_hash_layer(uint32_t l) const { return l < n_hash_layers; }
  // A ratio-4 layer overlaps windows and has the lightning indexer (CSA); any
  // other non-zero ratio pools disjoint windows (HCA).
  AttentionKind kind(uint32_t l) const {
    const uint32_t r = compress_ratios[l];
    return r == 0 ? AttentionKind::sliding : (r == 4 ? AttentionKind::csa : AttentionKind::hca);
  }

  // Reads and validates; throws ds4::Error naming the key on any problem.
  static ModelConfig from_gguf(const gguf::File& f);
  // Reads from an ordered key list (what a converter is about to write).
  static ModelConfig from_metadata(const std::vector<std::pair<std::string, gguf::Value>>& kv);
  // Throws ds4::Error naming the inconsistent hyperparameters.
  void validate() const;
  // The `deepseek4.*` keys in ds4's spelling, plus general.architecture.
  std::vector<std::pair<std::string, gguf::Value>> to_metadata() const;
};

}  // namespace ds4::model
