#pragma once
// The engine flags run, bench, serve and steer share, turned into EngineOptions
// in one place (numerics parsed, steering defaults applied).
#include <string>

#include "cli/steering_flags.h"
#include "engine/engine.h"

namespace ds4::cli {

// device_expert_layers: BackendOptions::device_expert_layers (-1: as many as fit).
engine::EngineOptions engine_options(const std::string& model, const std::string& backend, int threads,
                                     const std::string& numerics, const SteeringFlags* steering = nullptr,
                                     int device_expert_layers = -1);

}  // namespace ds4::cli
