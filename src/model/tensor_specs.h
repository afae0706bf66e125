#pragma once
// The GGUF tensors a config calls for (model-spec §3), with shapes. Used by
// `ds4 synth` to write random models of any shape.
#include <string>
#include <vector>

#include "model/config.h"

namespace ds4::model {

enum class TensorRole { matrix, norm, hc_scale, hc_base, sinks, ape, router_bias, tid2eid };

struct TensorSpec {
  std::string name;
  std::vector<int64_t> ne;  // GGUF order
  TensorRole role = TensorRole::matrix;
};

std::vector<TensorSpec> tensor_specs(const ModelConfig& c);

// Named shapes: "tiny" (the test fixture's), "flash", "pro" (model-spec §1.1).
ModelConfig preset_config(const std::string& name);

}  // namespace ds4::model
