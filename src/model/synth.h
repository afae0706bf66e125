#pragma once
// `ds4 synth`: a random-weight deepseek4 GGUF of any shape, for tests and
// benchmarks where no checkpoint exists (Pro, or Flash without 160 GB).
#include <cstdint>
#include <string>

namespace ds4::model {

struct SynthOptions {
  std::string shape = "tiny";  // tiny, flash, pro, or a config.json path
  int layers = 0;              // > 0: keep only the first N layers
  std::string recipe = "f16";
  std::string tokenizer_json;
  uint64_t seed = 1;
  int threads = 0;  // 0: all cores; the bytes do not depend on it
  std::string output;
  // Write the header (metadata and tensor directory) only and leave the data
  // section a hole: a sparse file of the full size whose weights read as
  // zeros, for tools that need only the directory (`ds4 plan`, `ds4 info`).
  bool header_only = false;
};

void synth(const SynthOptions& opt);

}  // namespace ds4::model
