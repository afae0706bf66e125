// `ds4 plan [-m MODEL.gguf | --shape S [--layers N] [--recipe R]] [--gpu-mem MIB[,MIB...]]
//  [--host-mem MIB] [--gpu-reserve MIB] [placement flags] [--tensors]`:
// where each weight of a model would live on these GPUs and this host
// (docs/placement.md). Reads only the file's metadata and tensor directory.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <fstream>
#include <optional>
#include <sstream>

#include "backend/backend.h"
#include "cli/commands.h"
#include "cli/placement_flags.h"
#include "gguf/gguf.h"
#include "model/convert.h"
#include "model/placement.h"
#include "model/tensor_specs.h"
#include "util/default_model.h"
#include "util/error.h"

namespace ds4::cli {
namespace {

constexpr double kMiB = 1024.0 * 1024.0;

struct PlanCmd {
  std::string model;
  std::string shape;
  int layers = 0;
  std::string recipe = "ds4-q2";
  std::string gpu_mem;
  std::string host_mem;
  double gpu_reserve = -1;  // MiB; < 0: the backend's working room
  bool tensors = false;
  PlacementFlags flags;
};

// MemAvailable of /proc/meminfo, or nothing where there is none.
std::optional<uint64_t> mem_available() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  uint64_t kb = 0;
  std::string unit;
  while (in >> key >> kb) {
    std::getline(in, unit);
    if (key == "MemAvailable:") return kb * 1024;
  }
  return std::nullopt;
}

model::ModelConfig shape_config(const PlanCmd& o) {
  model::ModelConfig c = o.shape.size() > 5 && o.shape.ends_with(".json") ? model::config_from_hf_json(o.shape)
                                                                           : model::preset_config(o.shape);
  if (o.layers > 0) {  // as `ds4 synth --layers`
    if (static_cast<uint32_t>(o.layers) > c.n_layer)
      fail("--layers {} exceeds the shape's {} layers", o.layers, c.n_layer);
    c.n_layer = static_cast<uint32_t>(o.layers);
    c.compress_ratios.resize(c.n_layer);
    c.swiglu_clamp.resize(c.n_layer);
    c.n_hash_layers = std::min(c.n_hash_layers, c.n_layer);
    c.validate();
  }
  return c;
}

void run_plan(const PlanCmd& o, CLI::App& sub) {
  const bool have_shape = !o.shape.empty();
  if (have_shape && !o.model.empty()) fail("ds4 plan: give -m FILE or --shape, not both");
  if (!have_shape && (sub.count("--layers") || sub.count("--recipe")))
    fail("ds4 plan: --layers and --recipe describe a --shape (a file's tensors are what the file holds)");
  model::PlacementOptions opt = placement_options(o.flags);
  const std::vector<int> gpus = placement_gpus(o.flags);

  // The model's tensor directory: a file's (nothing but the header is read) or a shape's.
  std::optional<gguf::File> file;
  model::ModelConfig config;
  std::string what;
  if (have_shape) {
    config = shape_config(o);
    what = fmt::format("shape {}{} with recipe {} (no file)", o.shape,
                       o.layers > 0 ? fmt::format(", first {} layers", o.layers) : "", o.recipe);
  } else {
    const std::string path = resolve_model_path(o.model);
    file = gguf::File::open(path);
    config = model::ModelConfig::from_gguf(*file);
    what = path;
  }
  const std::optional<backend::DeviceSizing> sizing = backend::cuda_sizing(config);
  const model::DeviceBytes device_bytes = sizing ? sizing->weight_bytes : model::DeviceBytes{};
  std::vector<model::PlacementTensor> tensors =
      file ? model::placement_tensors(*file, device_bytes) : model::placement_tensors(config, o.recipe, device_bytes);

  // Devices: the figures given, else the ones this machine has.
  const uint64_t reserve = o.gpu_reserve >= 0 ? static_cast<uint64_t>(std::llround(o.gpu_reserve * kMiB))
                           : sizing               ? sizing->working_room
                                                  : uint64_t{256} << 20;
  const uint64_t scratch = sizing ? sizing->scratch_bytes : 0;
  const uint64_t spill = sizing && sizing->spill_bytes ? sizing->spill_bytes(tensors) : 0;
  std::vector<model::DeviceBudget> devices;
  std::string source;
  if (!o.gpu_mem.empty()) {
    const std::vector<uint64_t> mem = model::parse_mib_list(o.gpu_mem, "--gpu-mem");
    std::vector<int> ids = gpus;
    if (ids.empty())
      for (size_t k = 0; k < mem.size(); ++k) ids.push_back(static_cast<int>(k));
    if (mem.size() != 1 && mem.size() != ids.size())
      fail("--gpu-mem '{}' gives {} sizes for {} devices (--gpus {}): give one size, or one per device", o.gpu_mem,
           mem.size(), ids.size(), o.flags.gpus);
    for (size_t k = 0; k < ids.size(); ++k) {
      model::DeviceBudget d;
      d.id = ids[k];
      d.free_bytes = mem.size() == 1 ? mem[0] : mem[k];
      d.reserve_bytes = reserve;
      d.scratch_bytes = scratch;
      d.spill_bytes = spill;
      devices.push_back(d);
    }
    source = "device memory from --gpu-mem";
  } else {
    const std::vector<backend::DeviceInfo> seen = backend::cuda_devices();
    if (seen.empty())
      fail("ds4 plan: {}; give the free memory of the GPU(s) to plan for with --gpu-mem MIB[,MIB...] (an H100 80GB "
           "has about 80552 MiB free)",
           sizing ? "no CUDA device here" : "this ds4 was built without CUDA, so it cannot ask a GPU");
    for (const auto& s : seen) {
      if (!gpus.empty() && std::find(gpus.begin(), gpus.end(), s.id) == gpus.end()) continue;
      model::DeviceBudget d;
      d.id = s.id;
      d.name = s.name;
      d.free_bytes = s.free_bytes;
      d.reserve_bytes = reserve;
      d.scratch_bytes = scratch;
      d.spill_bytes = spill;
      devices.push_back(d);
    }
    for (int id : gpus)
      if (std::none_of(devices.begin(), devices.end(), [&](const auto& d) { return d.id == id; }))
        fail("--gpus {}: there is no CUDA device {} here ({} found)", o.flags.gpus, id, seen.size());
    source = "device memory free now (cudaMemGetInfo)";
  }
  if (!o.host_mem.empty()) {
    const auto v = model::parse_mib_list(o.host_mem, "--host-mem");
    if (v.size() != 1) fail("--host-mem '{}': one size in MiB", o.host_mem);
    opt.host_bytes = v[0];
  } else {
    opt.host_bytes = mem_available();
  }

  const model::PlacementPlan plan = model::plan_placement(std::move(tensors), std::move(devices), opt);
  fmt::print("plan for {}\n", what);
  fmt::print("sizes: {}; {}; host memory {}\n",
             sizing ? "as the CUDA backend takes them (types without a GPU kernel widened to F32, its pass scratch "
                      "counted)"
                    : "as stored (this build has no CUDA backend: a type without a GPU kernel would take more, and the "
                      "pass scratch is not counted)",
             source,
             o.host_mem.empty() ? (opt.host_bytes ? "MemAvailable now" : "not checked") : "from --host-mem");
  fmt::print("{}", plan.text());
  if (o.tensors) {
    fmt::print("\ntensors:\n");
    size_t w = 4;
    for (const auto& t : plan.tensors) w = std::max(w, t.name.size());
    for (const auto& pl : plan.placements) {
      const auto& t = plan.tensors[pl.tensor];
      const std::string place = pl.device == model::kHost ? "host" : fmt::format("cuda{}", plan.devices[static_cast<size_t>(pl.device)].id);
      const std::string experts =
          t.stacked() ? fmt::format("experts {}-{}", pl.expert_begin, pl.expert_end - 1) : std::string();
      fmt::print("  {:<{}}  {:<8} {:<6} {:<15} {:>10.1f} MiB  {}\n", t.name, w, ggml_type_name(t.type), place, experts,
                 static_cast<double>(pl.bytes) / kMiB, model::place_rule_name(pl.rule));
    }
  }
  std::fflush(stdout);
}

Registration reg("plan", 95, [](CLI::App& app) {
  auto o = std::make_shared<PlanCmd>();
  CLI::App* sub = app.add_subcommand(
      "plan", "Show where a model's weights would go on GPU(s) and host memory (reads only the tensor directory)");
  sub->add_option("-m,--model", o->model, "Model .gguf (default: the one `ds4 pull` fetched last)");
  sub->add_option("--shape", o->shape, "Plan a shape instead of a file: tiny, flash, pro or a config.json");
  sub->add_option("--layers", o->layers, "With --shape: keep only the first N layers");
  sub->add_option("--recipe", o->recipe,
                  fmt::format("With --shape: tensor types ({}; default ds4-q2)", fmt::join(model::recipe_names(), ", ")));
  sub->add_option("--gpu-mem", o->gpu_mem,
                  "Free memory of each GPU in MiB, e.g. 80552.2 or 80552,80552 (default: ask the CUDA devices)");
  sub->add_option("--host-mem", o->host_mem, "Host memory usable for weights in MiB (default: MemAvailable)");
  sub->add_option("--gpu-reserve", o->gpu_reserve,
                  "Device memory kept free beyond weights and scratch, MiB (default: the CUDA backend's 256); "
                  "sessions' KV state needs room too");
  sub->add_flag("--tensors", o->tensors, "Also list every tensor (or expert range) and where it goes");
  add_placement_flags(sub, o->flags);
  sub->callback([o, sub] { run_plan(*o, *sub); });
});

}  // namespace
}  // namespace ds4::cli
