#pragma once
// The directional-steering flags shared by run, bench and serve
// (docs/steering.md): --dir-steering-file, --dir-steering-ffn,
// --dir-steering-attn. A file with neither scale given steers the FFN output
// with scale 1; a non-zero scale without a file is an error (at engine load).
// serve also takes --dir-steering-vector NAME=FILE (repeatable): named
// direction sets a request may choose with ds4_steering.vector.
#include <CLI/CLI.hpp>

#include <string>
#include <vector>

#include "engine/engine.h"

namespace ds4::cli {

struct SteeringFlags {
  std::string file;
  float ffn = 0, attn = 0;
  CLI::Option* ffn_opt = nullptr;
  CLI::Option* attn_opt = nullptr;
  std::vector<std::string> vectors;  // NAME=FILE (serve only)
};

void add_steering_flags(CLI::App* sub, SteeringFlags& f);
// --dir-steering-vector, for serve.
void add_steering_vector_flag(CLI::App* sub, SteeringFlags& f);
// Throws ds4::Error for a value without '=' or with an empty name or file.
void apply_steering_flags(const SteeringFlags& f, engine::EngineOptions& eo);

}  // namespace ds4::cli
