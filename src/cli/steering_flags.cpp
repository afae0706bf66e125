#include "cli/steering_flags.h"

#include "util/error.h"

namespace ds4::cli {

void add_steering_flags(CLI::App* sub, SteeringFlags& f) {
  sub->add_option("--dir-steering-file", f.file, "Steering directions: raw f32 [layers x embd] (docs/steering.md)");
  f.ffn_opt = sub->add_option("--dir-steering-ffn", f.ffn,
                              "Steering scale on each layer's FFN output (default 1 with a file and no scale given)");
  f.attn_opt = sub->add_option("--dir-steering-attn", f.attn, "Steering scale on each layer's attention output");
}

void add_steering_vector_flag(CLI::App* sub, SteeringFlags& f) {
  sub->add_option("--dir-steering-vector", f.vectors,
                  "NAME=FILE: a direction set requests may choose with ds4_steering.vector (repeatable; same format "
                  "as --dir-steering-file, which is the set named default)")
      ->allow_extra_args(false);
}

void apply_steering_flags(const SteeringFlags& f, engine::EngineOptions& eo) {
  for (const auto& v : f.vectors) {
    const auto eq = v.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == v.size())
      fail("invalid value for --dir-steering-vector: '{}' (expected NAME=FILE)", v);
    eo.steering_vectors.push_back({v.substr(0, eq), v.substr(eq + 1)});
  }
  eo.steering_file = f.file;
  eo.steering.ffn = f.ffn;
  eo.steering.attn = f.attn;
  const bool given = (f.ffn_opt && f.ffn_opt->count() > 0) || (f.attn_opt && f.attn_opt->count() > 0);
  if (!f.file.empty() && !given) eo.steering.ffn = 1.0f;
}

}  // namespace ds4::cli
