#include "cli/placement_flags.h"

#include "util/error.h"

namespace ds4::cli {

void add_placement_flags(CLI::App* sub, PlacementFlags& f) {
  sub->add_flag("--cpu-moe", f.cpu_moe, "Every routed expert in host memory");
  sub->add_option("--gpu-layers-experts", f.gpu_layers_experts,
                  "Routed experts of the first N layers on the GPU(s), the others in host memory");
  sub->add_option("--override-tensor", f.overrides,
                  "REGEX=DEVICE: tensors whose name matches go to DEVICE (cpu, host, cuda0, cuda1, ...); "
                  "repeatable, the first match wins, before every other rule")
      ->allow_extra_args(false);
  sub->add_flag("--split-layer-experts", f.split_layer,
                "After the whole layers that fit, fill the GPU's room left with part of the next layer's experts");
  sub->add_option("--gpus", f.gpus, "CUDA devices to use, e.g. 0,1 (default: the first when the model fits it, else all)");
}

model::PlacementOptions placement_options(const PlacementFlags& f) {
  model::PlacementOptions o;
  o.cpu_moe = f.cpu_moe;
  if (f.gpu_layers_experts < -1) fail("--gpu-layers-experts {}: must be >= 0", f.gpu_layers_experts);
  o.gpu_layers_experts = f.gpu_layers_experts;
  for (const auto& s : f.overrides) o.overrides.push_back(model::parse_tensor_override(s));
  o.split_layer = f.split_layer;
  o.auto_devices = f.gpus.empty();
  return o;
}

void add_expert_flags(CLI::App* sub, ExpertFlags& f) {
  auto* all = sub->add_flag("--cpu-moe", f.cpu_moe,
                            "CUDA: every routed expert stays in host memory and the CPU computes it");
  sub->add_option("--gpu-layers-experts", f.gpu_layers_experts,
                  "CUDA: routed experts of the first N layers on the GPU, the others in host memory, computed by "
                  "the CPU (default: all that fit)")
      ->excludes(all);
}

int device_expert_layers(const ExpertFlags& f) {
  if (f.cpu_moe) return 0;
  if (f.gpu_layers_experts < -1) fail("--gpu-layers-experts {}: must be >= 0", f.gpu_layers_experts);
  return f.gpu_layers_experts;
}

std::vector<int> placement_gpus(const PlacementFlags& f) {
  return f.gpus.empty() ? std::vector<int>{} : model::parse_device_ids(f.gpus);
}

}  // namespace ds4::cli
