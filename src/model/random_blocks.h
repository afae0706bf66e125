#pragma once
// Random tensor contents written directly in a GGUF type's block layout, for
// `ds4 synth`: quantizing random floats costs far more than writing the file
// (an 81 GiB Flash q2 model would take hours), while random codebook indices
// and quant values with a chosen scale are as good a random weight and cost
// only the random bits.
#include <cstdint>

#include "util/ggml_type.h"

namespace ds4::model {

// Counter-based generator: splitmix64, the same stream for a seed on every
// platform (std's distributions are implementation-defined).
class SplitMix {
 public:
  explicit SplitMix(uint64_t seed) : s_(seed) {}
  uint64_t next() {
    uint64_t z = (s_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  double uniform() { return (static_cast<double>(next() >> 11) + 0.5) * 0x1.0p-53; }

 private:
  uint64_t s_;
};

// Mixes several values into one seed (for per-tensor, per-chunk streams).
uint64_t mix_seed(uint64_t a, uint64_t b, uint64_t c = 0);

// Fills blocks of one type with values of mean ~0 and root-mean-square ~`rms`.
// The scale fields of each block are set from a calibration of the type (the
// rms of its elements with unit scales), so `rms` holds for any layout.
class RandomBlocks {
 public:
  // Throws ds4::Error when `t` has no direct generator (see supports()).
  RandomBlocks(GgmlType t, float rms);
  static bool supports(GgmlType t);

  int64_t block_size() const { return block_size_; }
  size_t block_bytes() const { return block_bytes_; }
  // n_blocks blocks from the stream of `seed` into dst (n_blocks * block_bytes()).
  void fill(uint64_t seed, uint8_t* dst, int64_t n_blocks) const;

 private:
  GgmlType t_;
  int64_t block_size_ = 1;
  size_t block_bytes_ = 0;
  float rms_ = 0;
  uint16_t d_ = 0, dmin_ = 0;  // f16 scale fields of the quantized types
  uint16_t table_[4096] = {};  // F16/BF16: uniform levels in [-a, a]
};

}  // namespace ds4::model
