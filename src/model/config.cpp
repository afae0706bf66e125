#include "model/config.h"

#include <cmath>
#include <functional>
#include <initializer_list>
#include <string_view>

#include "util/error.h"

namespace ds4::model {
namespace {

constexpr std::string_view kArch = "deepseek4";
using Finder = std::function<const gguf::Value*(std::string_view)>;

// One hyperparameter may be spelled differently by antirez/ds4 and by llama.cpp
// forks; the first spelling present wins and errors name the canonical one.
struct Keys {
  std::vector<std::string> names;
  Keys(std::initializer_list<const char*> l) {
    for (const char* n : l) names.push_back(std::string(kArch) + "." + n);
  }
};

const gguf::Value* lookup(const Finder& find, const Keys& k, std::string* used) {
  for (const auto& n : k.names)
    if (const gguf::Value* v = find(n)) {
      *used = n;
      return v;
    }
  *used = k.names.front();
  return nullptr;
}

uint64_t get_u64(const Finder& find, const Keys& k, bool required, uint64_t def) {
  std::string key;
  const gguf::Value* v = lookup(find, k, &key);
  if (!v) {
    if (required) fail("model metadata: missing required key '{}'", key);
    return def;
  }
  if (!v->is_integer()) fail("model metadata: key '{}' must be an integer, got {}", key, gguf::value_type_name(v->type));
  return v->as_u64(key);
}

uint32_t get_u32(const Finder& find, const Keys& k, bool required = true, uint32_t def = 0) {
  // Same reading as get_u64 (any integer type, negatives rejected), then the u32 range.
  const uint64_t x = get_u64(find, k, required, def);
  if (x > 0xffffffffULL) {
    std::string key;
    lookup(find, k, &key);
    fail("model metadata: key '{}' = {} is out of range", key, x);
  }
  return static_cast<uint32_t>(x);
}

float get_f32(const Finder& find, const Keys& k, bool required = true, float def = 0) {
  std::string key;
  const gguf::Value* v = lookup(find, k, &key);
  if (!v) {
    if (required) fail("model metadata: missing required key '{}'", key);
    return def;
  }
  if (!v->is_float() && !v->is_integer())
    fail("model metadata: key '{}' must be a number, got {}", key, gguf::value_type_name(v->type));
  const double d = v->as_f64(key);
  if (!std::isfinite(d)) fail("model metadata: key '{}' is not finite", key);
  return static_cast<float>(d);
}

bool get_bool(const Finder& find, const Keys& k, bool def) {
  std::string key;
  const gguf::Value* v = lookup(find, k, &key);
  if (!v) return def;
  if (v->type == gguf::ValueType::BOOL) return v->u != 0;
  if (v->is_integer()) return v->as_i64(key) != 0;
  fail("model metadata: key '{}' must be a bool, got {}", key, gguf::value_type_name(v->type));
}

// Either an array of per-layer values or one scalar for every layer.
std::vector<double> get_per_layer(const Finder& find, const Keys& k, uint32_t n_layer, bool required, double def) {
  std::string key;
  const gguf::Value* v = lookup(find, k, &key);
  std::vector<double> out;
  if (!v) {
    if (required) fail("model metadata: missing required key '{}'", key);
    return std::vector<double>(n_layer, def);
  }
  if (v->type != gguf::ValueType::ARRAY) {
    if (!v->is_float() && !v->is_integer()) fail("model metadata: key '{}' must be a number or an array", key);
    return std::vector<double>(n_layer, v->as_f64(key));
  }
  if (v->items.size() < n_layer)
    fail("model metadata: key '{}' has {} entries, block_count is {}", key, v->items.size(), n_layer);
  for (uint32_t l = 0; l < n_layer; ++l) {
    const auto& it = v->items[l];
    if (!it.is_float() && !it.is_integer()) fail("model metadata: key '{}' entry {} is not a number", key, l);
    out.push_back(it.as_f64(key));
  }
  return out;
}

ModelConfig read(const Finder& find) {
  if (const gguf::Value* a = find("general.architecture")) {
    if (a->type != gguf::ValueType::STRING || a->s != kArch)
      fail("model metadata: general.architecture is '{}', expected '{}'",
           a->type == gguf::ValueType::STRING ? a->s : a->to_string(), kArch);
  } else {
    fail("model metadata: missing required key 'general.architecture'");
  }
  ModelConfig c;
  c.n_layer = get_u32(find, {"block_count"});
  c.n_embd = get_u32(find, {"embedding_length"});
  c.n_vocab = get_u32(find, {"vocab_size"});
  c.n_head = get_u32(find, {"attention.head_count"});
  c.n_head_kv = get_u32(find, {"attention.head_count_kv"}, false, 1);
  c.head_dim = get_u32(find, {"attention.key_length"});
  const uint32_t value_len = get_u32(find, {"attention.value_length"}, false, c.head_dim);
  if (value_len != c.head_dim)
    fail("model metadata: deepseek4.attention.value_length {} must equal key_length {} (K = V)", value_len, c.head_dim);
  c.rope_dim = get_u32(find, {"rope.dimension_count"});
  c.q_lora_rank = get_u32(find, {"attention.q_lora_rank"});
  c.o_groups = get_u32(find, {"attention.output_group_count"});
  c.o_lora_rank = get_u32(find, {"attention.output_lora_rank"});
  c.n_expert = get_u32(find, {"expert_count"});
  c.n_expert_used = get_u32(find, {"expert_used_count"});
  c.n_expert_shared = get_u32(find, {"expert_shared_count"}, false, 1);
  c.expert_ff = get_u32(find, {"expert_feed_forward_length"});
  c.n_hash_layers = get_u32(find, {"hash_layer_count"}, false, 0);
  if (get_u32(find, {"expert_group_count"}, false, 0) > 1 || get_u32(find, {"expert_group_used_count"}, false, 0) > 1)
    fail("model metadata: deepseek4.expert_group_count/expert_group_used_count must be 0 (no group routing)");
  c.sliding_window = get_u32(find, {"attention.sliding_window"});
  c.indexer_heads = get_u32(find, {"attention.indexer.head_count"});
  c.indexer_head_dim = get_u32(find, {"attention.indexer.key_length"});
  c.indexer_top_k = get_u32(find, {"attention.indexer.top_k"});
  c.hc_count = get_u32(find, {"hyper_connection.count"});
  c.sinkhorn_iters = get_u32(find, {"hyper_connection.sinkhorn_iterations", "hyper_connection.sinkhorn_iters"});
  c.hc_eps = get_f32(find, {"hyper_connection.epsilon", "hyper_connection.eps"}, false, 1e-6f);
  c.rms_eps = get_f32(find, {"attention.layer_norm_rms_epsilon"});
  for (double r : get_per_layer(find, {"attention.compress_ratios"}, c.n_layer, true, 0)) {
    if (r < 0 || r != std::floor(r) || r > 1e6) fail("model metadata: deepseek4.attention.compress_ratios has invalid entry {}", r);
    c.compress_ratios.push_back(static_cast<uint32_t>(r));
  }
  for (double v : get_per_layer(find, {"swiglu_clamp_exp", "swiglu_limit"}, c.n_layer, false, 10.0))
    c.swiglu_clamp.push_back(static_cast<float>(v));
  c.rope_base = get_f32(find, {"rope.freq_base"});
  c.compress_rope_base = get_f32(find, {"attention.compress_rope_freq_base"}, false, c.rope_base);
  c.yarn_factor = get_f32(find, {"rope.scaling.factor"}, false, 1.0f);
  c.yarn_orig_ctx = get_u64(find, {"rope.scaling.original_context_length"}, false, 0);
  c.yarn_beta_fast = get_f32(find, {"rope.scaling.yarn_beta_fast"}, false, 32.0f);
  c.yarn_beta_slow = get_f32(find, {"rope.scaling.yarn_beta_slow"}, false, 1.0f);
  c.expert_weights_scale = get_f32(find, {"expert_weights_scale"}, false, 1.0f);
  c.expert_weights_norm = get_bool(find, {"expert_weights_norm"}, true);
  c.context_length = get_u64(find, {"context_length"}, false, 0);
  c.validate();
  return c;
}

}  // namespace

void ModelConfig::validate() const {
  auto need = [](bool ok, std::string_view what) {
    if (!ok) fail("model metadata: inconsistent hyperparameters: {}", what);
  };
  need(n_layer > 0, "block_count must be > 0");
  need(n_embd > 0, "embedding_length must be > 0");
  need(n_vocab > 0, "vocab_size must be > 0");
  need(n_head > 0, "attention.head_count must be > 0");
  need(n_head_kv == 1, "attention.head_count_kv must be 1 (one shared K=V head)");
  need(head_dim > 0, "attention.key_length must be > 0");
  need(rope_dim > 0 && rope_dim % 2 == 0 && rope_dim <= head_dim,
       "rope.dimension_count must be even, > 0 and <= attention.key_length");
  need(q_lora_rank > 0, "attention.q_lora_rank must be > 0");
  need(o_groups > 0 && n_head % o_groups == 0, "attention.head_count must be a multiple of attention.output_group_count");
  need(o_lora_rank > 0, "attention.output_lora_rank must be > 0");
  need(n_expert > 0, "expert_count must be > 0");
  need(n_expert_used > 0 && n_expert_used <= n_expert, "expert_used_count must be in 1..expert_count");
  need(expert_ff > 0, "expert_feed_forward_length must be > 0");
  need(n_hash_layers <= n_layer, "hash_layer_count must be <= block_count");
  need(sliding_window > 0, "attention.sliding_window must be > 0");
  need(hc_count > 0, "hyper_connection.count must be > 0");
  need(sinkhorn_iters > 0, "hyper_connection.sinkhorn_iterations must be > 0");
  need(rms_eps > 0, "attention.layer_norm_rms_epsilon must be > 0");
  need(rope_base > 1 && compress_rope_base > 1, "rope.freq_base and attention.compress_rope_freq_base must be > 1");
  need(compress_ratios.size() == n_layer, "attention.compress_ratios must have one entry per layer");
  need(swiglu_clamp.size() == n_layer, "swiglu_clamp_exp must have one entry per layer");
  bool any_csa = false, any_compressed = false;
  for (uint32_t r : compress_ratios) {
    any_csa |= r == 4;
    any_compressed |= r != 0;
  }
  if (any_csa) {
    need(indexer_heads > 0, "attention.indexer.head_count must be > 0 with ratio-4 layers");
    need(indexer_head_dim >= rope_dim && indexer_head_dim > 0,
         "attention.indexer.key_length must be >= rope.dimension_count");
    need(indexer_top_k > 0, "attention.indexer.top_k must be > 0");
  }
  if (any_compressed && yarn_factor != 1.0f)
    need(yarn_orig_ctx > 0, "rope.scaling.original_context_length must be > 0 when rope.scaling.factor != 1");
}

ModelConfig ModelConfig::from_gguf(const gguf::File& f) {
  return read([&f](std::string_view k) { return f.find(k); });
}

ModelConfig ModelConfig::from_metadata(const std::vector<std::pair<std::string, gguf::Value>>& kv) {
  return read([&kv](std::string_view k) -> const gguf::Value* {
    for (const auto& [key, v] : kv)
      if (key == k) return &v;
    return nullptr;
  });
}

std::vector<std::pair<std::string, gguf::Value>> ModelConfig::to_metadata() const {
  using gguf::Value;
  std::vector<std::pair<std::string, Value>> kv;
  auto put = [&kv](const char* k, Value v) { kv.emplace_back(std::string(kArch) + "." + k, std::move(v)); };
  kv.emplace_back("general.architecture", Value::str(std::string(kArch)));
  put("context_length", Value::u32(static_cast<uint32_t>(context_length ? context_length : 1048576)));
  put("block_count", Value::u32(n_layer));
  put("embedding_length", Value::u32(n_embd));
  put("vocab_size", Value::u32(n_vocab));
  put("attention.head_count", Value::u32(n_head));
  put("attention.head_count_kv", Value::u32(n_head_kv));
  put("attention.key_length", Value::u32(head_dim));
  put("attention.value_length", Value::u32(head_dim));
  put("rope.dimension_count", Value::u32(rope_dim));
  put("attention.q_lora_rank", Value::u32(q_lora_rank));
  put("attention.output_lora_rank", Value::u32(o_lora_rank));
  put("attention.output_group_count", Value::u32(o_groups));
  put("expert_count", Value::u32(n_expert));
  put("expert_used_count", Value::u32(n_expert_used));
  put("expert_feed_forward_length", Value::u32(expert_ff));
  put("expert_shared_count", Value::u32(n_expert_shared));
  put("hash_layer_count", Value::u32(n_hash_layers));
  put("attention.sliding_window", Value::u32(sliding_window));
  put("attention.indexer.head_count", Value::u32(indexer_heads));
  put("attention.indexer.key_length", Value::u32(indexer_head_dim));
  put("attention.indexer.top_k", Value::u32(indexer_top_k));
  put("hyper_connection.count", Value::u32(hc_count));
  put("hyper_connection.sinkhorn_iterations", Value::u32(sinkhorn_iters));
  put("attention.compress_ratios", Value::u32_array(compress_ratios));
  put("swiglu_clamp_exp", Value::f32_array(swiglu_clamp));
  put("rope.scaling.original_context_length", Value::u32(static_cast<uint32_t>(yarn_orig_ctx)));
  put("rope.freq_base", Value::f32(rope_base));
  put("rope.scaling.factor", Value::f32(yarn_factor));
  put("rope.scaling.yarn_beta_fast", Value::f32(yarn_beta_fast));
  put("rope.scaling.yarn_beta_slow", Value::f32(yarn_beta_slow));
  put("attention.compress_rope_freq_base", Value::f32(compress_rope_base));
  put("expert_weights_scale", Value::f32(expert_weights_scale));
  put("attention.layer_norm_rms_epsilon", Value::f32(rms_eps));
  put("hyper_connection.epsilon", Value::f32(hc_eps));
  put("expert_weights_norm", Value::boolean(expert_weights_norm));
  return kv;
}

}  // namespace ds4::model
