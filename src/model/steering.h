#pragma once
// Directional steering vectors (docs/steering.md): one unit direction d_l per
// layer, stored as a raw little-endian f32 matrix [n_layer][n_embd] (the file
// format antirez/ds4 users already have), optionally with a JSON metadata file
// beside it (same name, .json). Applying scale s to a layer's component y is
//   y <- y - s * d_l * (d_l . y)
// (positive s removes the direction, negative s amplifies it).
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/config.h"

namespace ds4::model {

struct SteeringVectors {
  std::string path;
  uint32_t n_layer = 0, n_embd = 0;
  std::vector<float> dirs;  // [n_layer][n_embd]
  nlohmann::json metadata;  // the .json beside the file, or null

  // The scales the metadata recommends for these directions,
  // "recommended_scales": {"ffn": S, "attn": S} (either key may be left out,
  // meaning 0); checked at load. None when the metadata has no such field.
  struct Scales {
    float ffn = 0, attn = 0;
  };
  std::optional<Scales> recommended_scales() const;

  std::span<const float> layer(uint32_t l) const {
    return std::span<const float>(dirs.data() + static_cast<size_t>(l) * n_embd, n_embd);
  }

  // Throws ds4::Error naming the file for a missing file, a size that is not
  // exactly n_layer x n_embd floats of this model, a non-finite value, or
  // metadata that is not JSON, names another shape or holds malformed
  // recommended_scales.
  static SteeringVectors load(const std::string& path, const ModelConfig& c);
  // Writes the raw matrix (and `metadata`, when not null, to the .json path).
  void save(const std::string& f32_path) const;
};

// "dir.f32" -> "dir.json"; any other name gets ".json" appended.
std::string steering_metadata_path(const std::string& f32_path);

// y <- y - s * d * (d . y) for one row, in double for the dot product so the
// result does not depend on how rows are grouped.
void steer_row(std::span<const float> d, float s, std::span<float> y);

}  // namespace ds4::model
