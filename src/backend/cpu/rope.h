#pragma once
// Interleaved-pair RoPE on the tail of a head (model-spec §5.4): plain for
// sliding-only layers, YaRN-blended frequencies (no magnitude scaling) for
// compressed layers.
#include <cstdint>
#include <vector>

#include "model/config.h"

namespace ds4::backend::cpu {

class Rope {
 public:
  Rope() = default;
  // `compressed`: the YaRN flavour with the compressed-layer base.
  Rope(const model::ModelConfig& c, bool compressed);
  // Rotates x[0 .. 2*pairs) (the rope tail) by position `pos`; inverse rotates by -pos.
  void apply(float* x, int64_t pos, bool inverse = false) const;
  const std::vector<float>& inv_freq() const { return inv_freq_; }

 private:
  std::vector<float> inv_freq_;  // one per pair
};

}  // namespace ds4::backend::cpu
