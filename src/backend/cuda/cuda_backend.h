#pragma once
// The CUDA backend (docs/ARCHITECTURE.md §4): weights and session KV state in
// device memory (plain cudaMalloc), the whole forward on the GPU. Matches the
// CPU reference up to f32 rounding and the activation quantization the CPU's
// integer kernels do (the GPU matvecs multiply by f32 activations).
#include <cstddef>
#include <memory>
#include <span>
#include <vector>

#include "backend/backend.h"

namespace ds4::backend::cuda {

// Throws ds4::Error when there is no CUDA device, a weight type cannot be run
// or the model does not fit in free device memory (naming both sizes).
std::unique_ptr<Backend> make_cuda_backend(std::shared_ptr<const model::Model> model, const BackendOptions& opt);

// How the backend sizes device memory (its load check and the placement
// planner use the same figures): a weight of this type and shape takes
// weight_device_bytes (types without a GPU kernel are widened to F32 at
// upload), the backend's pass scratch is at least pass_scratch_bytes (its
// smallest pass; it takes wider ones when a quarter of the memory the weights
// leave holds them), and the load check keeps kWeightRoom free beyond both.
size_t weight_device_bytes(GgmlType type, std::span<const int64_t> ne);
size_t pass_scratch_bytes(const model::ModelConfig& c);
// What the backend sets aside beside the weights when some routed experts
// stay in host memory (its staging for streaming them in wide passes), for a
// model with these tensors; 0 where it would not stream them.
size_t spill_stage_bytes(std::span<const model::PlacementTensor> tensors);
inline constexpr size_t kWeightRoom = size_t{256} << 20;

// Every device with its free memory now (creates a context on each); empty
// when there is no driver or no device.
std::vector<DeviceInfo> list_devices();

}  // namespace ds4::backend::cuda
