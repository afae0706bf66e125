#include "cli/engine_options.h"

namespace ds4::cli {

engine::EngineOptions engine_options(const std::string& model, const std::string& backend, int threads,
                                     const std::string& numerics, const SteeringFlags* steering,
                                     int device_expert_layers) {
  engine::EngineOptions eo;
  eo.model_path = model;
  eo.backend = backend;
  eo.threads = threads;
  eo.device_expert_layers = device_expert_layers;
  eo.numerics = backend::parse_numerics(numerics);
  if (steering) apply_steering_flags(*steering, eo);
  return eo;
}

}  // namespace ds4::cli
