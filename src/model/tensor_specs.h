#pragma once
// The GGUF tensors a config calls for (model-spec §3): the one table of names,
// shapes, checkpoint sources and weight slots that the loader (bind_weights),
// the converter's plan and `ds4 synth` all read.
#include <string>
#include <vector>

#include "model/config.h"
#include "model/weights.h"

namespace ds4::model {

enum class TensorRole { matrix, norm, hc_scale, hc_base, sinks, ape, router_bias, tid2eid };

struct TensorSpec {
  std::string name;
  std::vector<int64_t> ne;  // GGUF order
  TensorRole role = TensorRole::matrix;
  // Names in the official checkpoint (first present wins; a `model.` prefix is
  // ignored). Stacked expert tensors: one pattern with "{}" for the expert index.
  std::vector<std::string> sources;
  bool per_expert = false;
  bool required = true;  // false: may be absent (exp_probs_b on hash layers)
  uint32_t layer = 0;
  // Where bind_weights puts it.
  Weight& (*slot)(ModelWeights&, uint32_t layer) = nullptr;
  // Read by the forward as plain floats (norms, scales, biases): F32/F16/BF16 only.
  bool float_only() const { return role != TensorRole::matrix && role != TensorRole::tid2eid; }
};

std::vector<TensorSpec> tensor_specs(const ModelConfig& c);

// Named shapes: "tiny" (the test fixture's), "flash", "pro" (model-spec §1.1).
ModelConfig preset_config(const std::string& name);

}  // namespace ds4::model
