#include "model/synth.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <cstring>
#include <numeric>

#include "gguf/gguf.h"
#include "model/convert.h"
#include "model/tensor_specs.h"
#include "quant/quant.h"
#include "util/error.h"
#include "util/log.h"

#if __has_include("tokenizer/hf_import.h")
#include "tokenizer/hf_import.h"
#define DS4_HAVE_TOKENIZER_IMPORT 1
#endif

namespace ds4::model {
namespace {

// splitmix64 + Box-Muller: the same file for a seed on every platform (std's
// distributions are implementation-defined).
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t next() {
    uint64_t z = (s_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  double uniform() { return (static_cast<double>(next() >> 11) + 0.5) * 0x1.0p-53; }
  float normal() {
    const double u = uniform(), v = uniform();
    return static_cast<float>(std::sqrt(-2 * std::log(u)) * std::cos(2 * M_PI * v));
  }

 private:
  uint64_t s_;
};

// Values chosen so activations stay O(1): matrices N(0, 1/fan_in), norms near 1,
// HC scales in [0.5, 1.5], small biases.
float draw(Rng& g, TensorRole role, int64_t fan_in) {
  switch (role) {
    case TensorRole::matrix: return g.normal() / std::sqrt(static_cast<float>(fan_in));
    case TensorRole::norm: return 1.0f + 0.2f * g.normal();
    case TensorRole::hc_scale: return 0.5f + static_cast<float>(g.uniform());
    case TensorRole::hc_base:
    case TensorRole::sinks:
    case TensorRole::ape: return 0.5f * g.normal();
    case TensorRole::router_bias: return 0.1f * g.normal();
    case TensorRole::tid2eid: return 0;
  }
  return 0;
}

}  // namespace

void synth(const SynthOptions& opt) {
  ModelConfig c = opt.shape.size() > 5 && opt.shape.ends_with(".json") ? config_from_hf_json(opt.shape) : preset_config(opt.shape);
  if (opt.layers > 0) {
    if (static_cast<uint32_t>(opt.layers) > c.n_layer) fail("synth: --layers {} exceeds the shape's {} layers", opt.layers, c.n_layer);
    c.n_layer = static_cast<uint32_t>(opt.layers);
    c.compress_ratios.resize(c.n_layer);
    c.swiglu_clamp.resize(c.n_layer);
    c.n_hash_layers = std::min(c.n_hash_layers, c.n_layer);
    c.validate();
  }
  const std::vector<TensorSpec> specs = tensor_specs(c);
  std::vector<GgmlType> types;
  gguf::Writer w;
  for (auto& [k, v] : c.to_metadata()) w.set(k, std::move(v));
  w.set("general.name", gguf::Value::str(fmt::format("synth-{}-seed{}", opt.shape, opt.seed)));
  if (!opt.tokenizer_json.empty()) {
#ifdef DS4_HAVE_TOKENIZER_IMPORT
    for (auto& [k, v] : tokenizer::gguf_metadata_from_hf(opt.tokenizer_json)) w.set(k, std::move(v));
#else
    fail("synth: --tokenizer is not available in this build (tokenizer import not built yet)");
#endif
  }
  for (const auto& s : specs) {
    types.push_back(s.role == TensorRole::tid2eid ? GgmlType::I32 : recipe_type(opt.recipe, s.name, s.ne));
    w.add_tensor_info(s.name, types.back(), s.ne);
  }
  w.begin(opt.output);
  Rng g(opt.seed);
  for (size_t i = 0; i < specs.size(); ++i) {
    const TensorSpec& s = specs[i];
    const int64_t cols = s.ne[0];
    int64_t rows = 1;
    for (size_t d = 1; d < s.ne.size(); ++d) rows *= s.ne[d];
    std::vector<uint8_t> bytes;
    if (s.role == TensorRole::tid2eid) {
      // each token: n_expert_used distinct experts (partial Fisher-Yates)
      bytes.resize(static_cast<size_t>(cols * rows) * 4);
      std::vector<int32_t> perm(c.n_expert);
      for (int64_t r = 0; r < rows; ++r) {
        std::iota(perm.begin(), perm.end(), 0);
        for (int64_t k = 0; k < cols; ++k) {
          const auto j = static_cast<size_t>(k + static_cast<int64_t>(g.next() % static_cast<uint64_t>(c.n_expert - k)));
          std::swap(perm[static_cast<size_t>(k)], perm[j]);
        }
        std::memcpy(bytes.data() + r * cols * 4, perm.data(), static_cast<size_t>(cols) * 4);
      }
    } else {
      const size_t rb = quant::row_bytes(types[i], cols);
      bytes.resize(rb * static_cast<size_t>(rows));
      std::vector<float> row(static_cast<size_t>(cols));
      for (int64_t r = 0; r < rows; ++r) {
        for (auto& x : row) x = draw(g, s.role, cols);
        quant::quantize_row(types[i], row.data(), bytes.data() + static_cast<size_t>(r) * rb, cols);
      }
    }
    w.write_tensor_data(s.name, bytes);
    log::info("[{}/{}] {} {} {}", i + 1, specs.size(), s.name, ggml_type_name(types[i]), fmt::format("[{}]", fmt::join(s.ne, ", ")));
  }
  w.finish();
  log::info("synth: wrote {} ({} layers, recipe {}, seed {})", opt.output, c.n_layer, opt.recipe, opt.seed);
}

}  // namespace ds4::model
