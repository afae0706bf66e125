#pragma once
// The placement plan (docs/placement.md): where every weight of a model lives
// when one or more GPUs and the host share it (issues 21 and 22). It is pure
// arithmetic over the tensor directory, names and byte sizes: nothing here
// touches a device or reads a weight, so `ds4 plan` runs on any machine, and a
// device backend can follow the plan at load.
//
// Default plan: the dense parts (embedding, attention, norms, routers, shared
// experts, hyper-connection mixers, output head) on every device first, since
// every token needs all of them; then the routed experts, a whole layer at a
// time from layer 0 up, split by expert index ranges across the devices
// (expert parallelism); what does not fit stays in host memory. Overrides
// (--override-tensor, --cpu-moe, --gpu-layers-experts) come before the rules.
#include <cstdint>
#include <functional>
#include <optional>
#include <regex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "gguf/gguf.h"
#include "model/config.h"
#include "util/ggml_type.h"

namespace ds4::model {

// What a tensor is for, from its GGUF name (model-spec §3). `other` holds the
// hyper-connection mixers (hc_attn_*, hc_ffn_*) and any name not known here.
enum class TensorKind { embedding, attention, norm, router, shared_expert, routed_expert, output_head, other };
std::string_view tensor_kind_name(TensorKind k);
TensorKind tensor_kind(std::string_view gguf_name);
// N for "blk.N.<...>", -1 for a tensor outside the layers.
int tensor_layer(std::string_view gguf_name);

struct PlacementTensor {
  std::string name;
  GgmlType type = GgmlType::F32;
  std::vector<int64_t> ne;  // GGUF order
  TensorKind kind = TensorKind::other;
  int layer = -1;
  uint64_t host_bytes = 0;    // as stored: what host memory holds (the file's mapping)
  uint64_t device_bytes = 0;  // what a device copy takes (see DeviceBytes)
  // Routed experts stacked on the last axis ([cols, rows, n_expert]): the
  // planner may split them by expert index ranges. 0: not stacked.
  uint32_t n_expert = 0;
  bool stacked() const { return n_expert > 0; }
};

// Bytes a device copy of a tensor of this type and shape takes. The CUDA
// backend's (backend::cuda_sizing) widens types its kernels lack to F32.
// Empty: as stored.
using DeviceBytes = std::function<uint64_t(GgmlType type, std::span<const int64_t> ne)>;

// The tensor directory of an opened file; no weight byte is read.
std::vector<PlacementTensor> placement_tensors(const gguf::File& f, const DeviceBytes& device_bytes = {});
// The tensors a config and a conversion recipe (convert.h) would produce, as
// `ds4 synth` writes them: no file needed.
std::vector<PlacementTensor> placement_tensors(const ModelConfig& c, const std::string& recipe,
                                               const DeviceBytes& device_bytes = {});

// A place: the host, or the index of a device in the plan's device list.
constexpr int kHost = -1;

struct DeviceBudget {
  int id = 0;        // CUDA ordinal: the N of cudaN
  std::string name;  // for display ("NVIDIA H100 80GB HBM3"); may be empty
  uint64_t free_bytes = 0;                        // free device memory (cudaMemGetInfo)
  uint64_t reserve_bytes = uint64_t{256} << 20;   // working room kept free (the CUDA backend's)
  uint64_t scratch_bytes = 0;                     // backend scratch besides the weights (pass scratch)
  // Set aside as well when any routed expert stays in host memory: the CUDA
  // backend's staging buffers for streaming them in wide passes.
  uint64_t spill_bytes = 0;
  // free - reserve - scratch, or 0.
  uint64_t usable() const;
};

// --override-tensor REGEX=DEVICE (llama.cpp's flag): tensors whose name the
// regex matches anywhere (std::regex_search, ECMAScript) go to DEVICE.
struct TensorOverride {
  std::string spec;  // as given
  std::string pattern;
  std::regex re;
  int device = kHost;  // kHost or a CUDA ordinal
};
// Throw ds4::Error naming the flag and the bad part.
TensorOverride parse_tensor_override(std::string_view spec);
int parse_device_name(std::string_view name);                                       // cpu|host -> kHost; cudaN -> N
std::vector<int> parse_device_ids(std::string_view list);                           // "0,1,3"
std::vector<uint64_t> parse_mib_list(std::string_view list, std::string_view flag);  // "80552.2,81920" -> bytes

struct PlacementOptions {
  // Every routed expert on the host (llama.cpp's --cpu-moe).
  bool cpu_moe = false;
  // >= 0: the routed experts of layers [0, N) on the devices (refused when
  // they do not fit), those of the other layers on the host.
  int gpu_layers_experts = -1;
  // Checked first, in order; the first match wins.
  std::vector<TensorOverride> overrides;
  // After the whole layers that fit, fill the room left with the first
  // experts of the next layer (that layer is then split device/host).
  bool split_layer = false;
  // Usable host memory for host-resident weights; none: not checked.
  std::optional<uint64_t> host_bytes;
  // Several devices given but no explicit --gpus: use the first alone when the
  // model fits it without spilling to the host, else all of them.
  bool auto_devices = false;
};

// Why a piece went where it did.
enum class PlaceRule {
  dense,               // dense part, needed by every token: on the devices
  experts,             // routed experts that fit on the devices
  spill,               // routed experts that did not fit: host
  cpu_moe,             // --cpu-moe
  gpu_layers_experts,  // --gpu-layers-experts N (either side of N)
  override_tensor,     // --override-tensor (Placement::override_index)
  no_device,           // the plan has no device
};
std::string_view place_rule_name(PlaceRule r);

// One tensor, or one expert range of a stacked tensor, at one place. A dense
// tensor replicated on several devices has one Placement per device.
struct Placement {
  size_t tensor = 0;  // index into PlacementPlan::tensors
  int device = kHost;  // index into PlacementPlan::devices, or kHost
  // Stacked tensors: experts [expert_begin, expert_end); otherwise 0, 0.
  uint32_t expert_begin = 0, expert_end = 0;
  uint64_t bytes = 0;  // device_bytes (on a device) or host_bytes (host) of this piece
  PlaceRule rule = PlaceRule::dense;
  int override_index = -1;  // rule override_tensor: which --override-tensor
};

enum class DenseMode { single, replicated, split_by_layers, none };

struct PlacementPlan {
  std::vector<PlacementTensor> tensors;
  std::vector<DeviceBudget> devices;
  std::vector<Placement> placements;
  std::vector<uint64_t> device_weight_bytes;  // per device: the weights placed there
  uint64_t host_weight_bytes = 0;
  std::optional<uint64_t> host_budget;
  DenseMode dense_mode = DenseMode::single;
  // The printed plan: model, one line per device, the host, then why.
  std::vector<std::string> lines;
  std::string text() const;  // lines joined with newlines

  // Where expert `expert` of a tensor lives (any tensor: expert 0): the device
  // indices and/or kHost. Throws for an unknown name.
  std::vector<int> places_of(std::string_view tensor_name, uint32_t expert = 0) const;
  // Experts of layer `layer`'s routed tensors held by device `device` (or kHost),
  // counted on the layer's first stacked tensor.
  uint32_t experts_at(int layer, int device) const;
};

// Throws ds4::Error naming the figures when the plan cannot be made: the dense
// parts do not fit the devices, --gpu-layers-experts asks for more than fits,
// an override overfills a device, or host and devices together cannot hold
// the model; and for inconsistent options (an override naming a device outside
// the group, --cpu-moe with --gpu-layers-experts).
PlacementPlan plan_placement(std::vector<PlacementTensor> tensors, std::vector<DeviceBudget> devices,
                             const PlacementOptions& opt);

}  // namespace ds4::model
