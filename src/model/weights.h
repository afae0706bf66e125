#pragma once
// Weights bound by GGUF name (model-spec §3) with shape and type checks. A
// Weight is a view into the mapped file: nothing is copied.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "model/config.h"
#include "quant/quant.h"

namespace ds4::model {

struct Weight {
  std::string name;
  GgmlType type = GgmlType::F32;
  std::vector<int64_t> ne;             // GGUF order: ne[0] contiguous
  const uint8_t* data = nullptr;
  const quant::TypeOps* ops = nullptr;  // from the registry, checked at bind time

  bool present() const { return data != nullptr; }
  int64_t cols() const { return ne.empty() ? 0 : ne[0]; }
  int64_t rows() const { return ne.size() < 2 ? 1 : ne[1]; }
  size_t row_bytes() const;
  const uint8_t* row(int64_t r) const { return data + static_cast<size_t>(r) * row_bytes(); }
  // Expert e of a 3-D [cols, rows, E] tensor as a 2-D weight.
  Weight slice(int64_t e) const;
  // Whole tensor as float (for small weights: norms, biases, scales).
  std::vector<float> to_f32() const;
};

struct CompressorWeights {
  Weight ape, kv, gate, norm;
};

struct LayerWeights {
  Weight hc_attn_fn, hc_attn_scale, hc_attn_base;
  Weight attn_norm, q_a, q_a_norm, q_b, kv, kv_norm, sinks, out_a, out_b;
  CompressorWeights compressor;          // ratio != 0
  Weight indexer_q_b, indexer_proj;      // ratio 4
  CompressorWeights indexer_compressor;  // ratio 4
  Weight hc_ffn_fn, hc_ffn_scale, hc_ffn_base;
  Weight ffn_norm, gate_inp, exp_probs_b, tid2eid;
  Weight gate_exps, up_exps, down_exps;
  Weight gate_shexp, up_shexp, down_shexp;
};

struct ModelWeights {
  Weight token_embd, output_hc_fn, output_hc_base, output_hc_scale, output_norm, output;
  std::vector<LayerWeights> layers;
};

// Binds every tensor the config calls for. Throws ds4::Error naming the tensor
// when one is missing, has the wrong shape or a type the registry cannot run.
ModelWeights bind_weights(const gguf::File& f, const ModelConfig& c);

// A loaded model: the mapped file, its config and its bound weights.
struct Model {
  std::shared_ptr<gguf::File> file;
  ModelConfig config;
  ModelWeights weights;
  static std::shared_ptr<Model> load(const std::string& path);
};

}  // namespace ds4::model
