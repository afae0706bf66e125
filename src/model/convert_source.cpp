// Reading one source tensor as float, with FP8/FP4 block scales applied.
#include <cmath>
#include <limits>

#include "model/convert.h"
#include "util/error.h"

namespace ds4::model {
namespace {

const safetensors::Tensor* find_scale(const safetensors::Checkpoint& ck, const std::string& name) {
  std::string base = name;
  const std::string suffix = ".weight";
  if (base.size() > suffix.size() && base.compare(base.size() - suffix.size(), suffix.size(), suffix) == 0)
    base.resize(base.size() - suffix.size());
  else
    return nullptr;
  if (const auto* s = ck.find(base + ".scale")) return s;
  return ck.find(name + "_scale_inv");
}

}  // namespace

std::vector<float> load_source_f32(const safetensors::Checkpoint& ck, const std::string& name,
                                   std::vector<int64_t>* torch_shape) {
  const safetensors::Tensor& t = ck.get(name);
  std::vector<int64_t> shape = t.shape;
  std::vector<float> v;
  const bool packed_fp4 = t.dtype == safetensors::DType::I8 || t.dtype == safetensors::DType::U8;
  const safetensors::Tensor* scale = nullptr;
  if (t.dtype == safetensors::DType::F8_E4M3 || t.dtype == safetensors::DType::F4 || packed_fp4)
    scale = find_scale(ck, name);
  if (packed_fp4 && scale) {
    // FP4 e2m1 packed two per byte: the logical row is twice as long.
    if (shape.size() != 2) fail("tensor '{}': packed FP4 weight must be 2-D, has shape {}", name, t.shape_string());
    static const float grid[8] = {0.f, .5f, 1.f, 1.5f, 2.f, 3.f, 4.f, 6.f};
    shape[1] *= 2;
    v.resize(static_cast<size_t>(shape[0] * shape[1]));
    for (size_t k = 0; k < v.size(); ++k) {
      const uint8_t b = t.data[k / 2];
      const uint8_t q = (k & 1) ? static_cast<uint8_t>(b >> 4) : static_cast<uint8_t>(b & 0xf);
      v[k] = (q & 8) ? -grid[q & 7] : grid[q & 7];
    }
  } else {
    v = t.to_f32();
  }
  if (scale) {
    if (shape.size() != 2 || scale->shape.size() != 2)
      fail("tensor '{}' {} with scale '{}' {}: block-scaled weights must be 2-D", name, t.shape_string(), scale->name,
           scale->shape_string());
    const int64_t R = shape[0], C = shape[1], SR = scale->shape[0], SC = scale->shape[1];
    if (SR <= 0 || SC <= 0 || SR > R || SC > C) fail("tensor '{}': scale '{}' shape {} does not fit the weight", name, scale->name, scale->shape_string());
    // Known layouts first (ceil-division makes a generic guess ambiguous when
    // the last block is partial): FP8 128x128, FP4 1x32; else exact division.
    int64_t br = 0, bc = 0;
    const int64_t cands[][2] = {{128, 128}, {1, 32}};
    for (const auto& b : cands)
      if ((R + b[0] - 1) / b[0] == SR && (C + b[1] - 1) / b[1] == SC) {
        br = b[0];
        bc = b[1];
        break;
      }
    if (br == 0 && R % SR == 0 && C % SC == 0) {
      br = R / SR;
      bc = C / SC;
    }
    if (br == 0)
      fail("tensor '{}' {}: scale '{}' shape {} is not a block grid of the weight", name, t.shape_string(), scale->name,
           scale->shape_string());
    const std::vector<float> s = scale->to_f32();
    for (int64_t i = 0; i < R; ++i)
      for (int64_t j = 0; j < C; ++j) {
        const float f = s[static_cast<size_t>((i / br) * SC + j / bc)];
        if (!std::isfinite(f)) fail("tensor '{}': scale '{}' holds a non-finite value", name, scale->name);
        v[static_cast<size_t>(i * C + j)] *= f;
      }
  }
  if (torch_shape) *torch_shape = shape;
  return v;
}

}  // namespace ds4::model
