// config.json -> ModelConfig. Accepts the official release spelling
// (`compress_ratios`, `rope_scaling`) and transformers 5.x's (`layer_types` +
// `compress_rates`, `rope_parameters` flat or split into main/compress).
#include <nlohmann/json.hpp>

#include <fstream>

#include "model/convert.h"
#include "util/error.h"

namespace ds4::model {
namespace {

using json = nlohmann::json;

const json& need(const json& j, const char* key, const std::string& path) {
  if (!j.contains(key) || j.at(key).is_null()) fail("{}: missing required field '{}'", path, key);
  return j.at(key);
}

template <typename T>
T get_or(const json& j, const char* key, T def) {
  if (!j.contains(key) || j.at(key).is_null()) return def;
  return j.at(key).get<T>();
}

}  // namespace

ModelConfig config_from_hf_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail("{}: cannot open", path);
  json j;
  try {
    j = json::parse(in);
  } catch (const std::exception& e) {
    fail("{}: invalid JSON: {}", path, e.what());
  }
  try {
    ModelConfig c;
    c.n_layer = need(j, "num_hidden_layers", path).get<uint32_t>();
    c.n_embd = need(j, "hidden_size", path).get<uint32_t>();
    c.n_vocab = need(j, "vocab_size", path).get<uint32_t>();
    c.n_head = need(j, "num_attention_heads", path).get<uint32_t>();
    c.n_head_kv = get_or<uint32_t>(j, "num_key_value_heads", 1);
    c.head_dim = need(j, "head_dim", path).get<uint32_t>();
    if (j.contains("qk_rope_head_dim"))
      c.rope_dim = j["qk_rope_head_dim"].get<uint32_t>();
    else
      c.rope_dim = static_cast<uint32_t>(c.head_dim * need(j, "partial_rotary_factor", path).get<double>() + 0.5);
    c.q_lora_rank = need(j, "q_lora_rank", path).get<uint32_t>();
    c.o_groups = need(j, "o_groups", path).get<uint32_t>();
    c.o_lora_rank = need(j, "o_lora_rank", path).get<uint32_t>();
    c.n_expert = need(j, "n_routed_experts", path).get<uint32_t>();
    c.n_expert_used = need(j, "num_experts_per_tok", path).get<uint32_t>();
    c.n_expert_shared = get_or<uint32_t>(j, "n_shared_experts", 1);
    c.expert_ff = need(j, "moe_intermediate_size", path).get<uint32_t>();
    if (j.contains("num_hash_layers")) {
      c.n_hash_layers = j["num_hash_layers"].get<uint32_t>();
    } else if (j.contains("mlp_layer_types")) {
      for (const auto& t : j["mlp_layer_types"]) c.n_hash_layers += t.get<std::string>() == "hash_moe";
    }
    c.sliding_window = need(j, "sliding_window", path).get<uint32_t>();
    c.indexer_heads = get_or<uint32_t>(j, "index_n_heads", 0);
    c.indexer_head_dim = get_or<uint32_t>(j, "index_head_dim", 0);
    c.indexer_top_k = get_or<uint32_t>(j, "index_topk", 0);
    c.hc_count = need(j, "hc_mult", path).get<uint32_t>();
    c.sinkhorn_iters = need(j, "hc_sinkhorn_iters", path).get<uint32_t>();
    c.hc_eps = get_or<float>(j, "hc_eps", 1e-6f);
    c.rms_eps = get_or<float>(j, "rms_norm_eps", 1e-6f);

    if (j.contains("compress_ratios")) {
      for (const auto& r : j["compress_ratios"]) c.compress_ratios.push_back(r.get<uint32_t>());
      if (c.compress_ratios.size() < c.n_layer)
        fail("{}: compress_ratios has {} entries, num_hidden_layers is {}", path, c.compress_ratios.size(), c.n_layer);
      c.compress_ratios.resize(c.n_layer);  // the extra entry is the MTP block
    } else if (j.contains("layer_types")) {
      const json& rates = need(j, "compress_rates", path);
      for (const auto& t : j["layer_types"]) {
        const std::string s = t.get<std::string>();
        if (s == "sliding_attention")
          c.compress_ratios.push_back(0);
        else if (rates.contains(s))
          c.compress_ratios.push_back(rates[s].get<uint32_t>());
        else
          fail("{}: layer_types entry '{}' has no compress_rates entry", path, s);
      }
      if (c.compress_ratios.size() != c.n_layer)
        fail("{}: layer_types has {} entries, num_hidden_layers is {}", path, c.compress_ratios.size(), c.n_layer);
    } else {
      fail("{}: missing 'compress_ratios' (or 'layer_types' + 'compress_rates')", path);
    }
    c.swiglu_clamp.assign(c.n_layer, get_or<float>(j, "swiglu_limit", 10.0f));
    c.rope_base = get_or<float>(j, "rope_theta", 10000.0f);
    c.compress_rope_base = get_or<float>(j, "compress_rope_theta", c.rope_base);
    // YaRN parameters of the compressed layers.
    json yarn;
    if (j.contains("rope_scaling") && j["rope_scaling"].is_object()) yarn = j["rope_scaling"];
    if (j.contains("rope_parameters") && j["rope_parameters"].is_object()) {
      const json& rp = j["rope_parameters"];
      yarn = rp.contains("compress") ? rp["compress"] : rp;
      if (rp.contains("compress") && rp["compress"].contains("rope_theta"))
        c.compress_rope_base = rp["compress"]["rope_theta"].get<float>();
      if (rp.contains("main") && rp["main"].contains("rope_theta")) c.rope_base = rp["main"]["rope_theta"].get<float>();
    }
    const std::string type = get_or<std::string>(yarn, "rope_type", get_or<std::string>(yarn, "type", "default"));
    if (type == "yarn") {
      c.yarn_factor = get_or<float>(yarn, "factor", 1.0f);
      c.yarn_orig_ctx = get_or<uint64_t>(yarn, "original_max_position_embeddings", 0);
      c.yarn_beta_fast = get_or<float>(yarn, "beta_fast", 32.0f);
      c.yarn_beta_slow = get_or<float>(yarn, "beta_slow", 1.0f);
    } else {
      c.yarn_factor = 1.0f;
      c.yarn_beta_fast = 32.0f;
      c.yarn_beta_slow = 1.0f;
    }
    c.expert_weights_scale = get_or<float>(j, "routed_scaling_factor", 1.0f);
    c.expert_weights_norm = get_or<bool>(j, "norm_topk_prob", true);
    c.context_length = get_or<uint64_t>(j, "max_position_embeddings", 0);
    c.validate();
    return c;
  } catch (const json::exception& e) {
    fail("{}: unexpected field type: {}", path, e.what());
  }
}

}  // namespace ds4::model
