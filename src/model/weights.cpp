#include "model/weights.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "model/tensor_specs.h"
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
  ModelWeights w;
  w.layers.resize(c.n_layer);
  for (const TensorSpec& t : tensor_specs(c))
    t.slot(w, t.layer) = b.bind(t.name, t.ne, t.required, t.float_only(), t.role == TensorRole::tid2eid);
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
