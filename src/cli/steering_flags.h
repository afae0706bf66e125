#pragma once
// The directional-steering flags shared by run, bench and serve
// (docs/steering.md): --dir-steering-file, --dir-steering-ffn,
// --dir-steering-attn. A file with neither scale given steers the FFN output
// with scale 1; a non-zero scale without a file is an error (at engine load).
#include <CLI/CLI.hpp>

#include <string>

#include "engine/engine.h"

namespace ds4::cli {

struct SteeringFlags {
  std::string file;
  float ffn = 0, attn = 0;
  CLI::Option* ffn_opt = nullptr;
  CLI::Option* attn_opt = nullptr;
};

void add_steering_flags(CLI::App* sub, SteeringFlags& f);
void apply_steering_flags(const SteeringFlags& f, engine::EngineOptions& eo);

}  // namespace ds4::cli
