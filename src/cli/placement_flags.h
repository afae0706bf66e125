#pragma once
// The placement flags (docs/placement.md): --cpu-moe, --gpu-layers-experts N,
// --override-tensor REGEX=DEVICE (repeatable, first match wins),
// --split-layer-experts and --gpus 0,1,... . `ds4 plan` takes them all; run,
// bench, serve and logits take the two the CUDA backend executes
// (add_expert_flags).
// Wiring: add_placement_flags(sub, flags) at registration, then
//   model::PlacementOptions o = placement_options(flags);
//   std::vector<int> ids = placement_gpus(flags);  // empty: --gpus not given
#include <CLI/CLI.hpp>

#include <string>
#include <vector>

#include "model/placement.h"

namespace ds4::cli {

struct PlacementFlags {
  bool cpu_moe = false;
  int gpu_layers_experts = -1;
  std::vector<std::string> overrides;
  bool split_layer = false;
  std::string gpus;
};

void add_placement_flags(CLI::App* sub, PlacementFlags& f);

// The part of a plan the CUDA backend executes today, for run, bench, serve
// and logits: one GPU, the routed experts of whole layers in host memory
// (--cpu-moe: all of them; --gpu-layers-experts N: all but the first N).
struct ExpertFlags {
  bool cpu_moe = false;
  int gpu_layers_experts = -1;
};
void add_expert_flags(CLI::App* sub, ExpertFlags& f);
// BackendOptions::device_expert_layers: 0 for --cpu-moe, N for
// --gpu-layers-experts N, -1 (as many as fit) for neither. Throws ds4::Error
// for a negative N.
int device_expert_layers(const ExpertFlags& f);
// Throws ds4::Error naming the flag and the bad value.
model::PlacementOptions placement_options(const PlacementFlags& f);
std::vector<int> placement_gpus(const PlacementFlags& f);

}  // namespace ds4::cli
